package modelfile

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"unicode/utf8"

	"github.com/alignet/alignet/npy"
)

// DatasetOrder documents the triplet convention of AligNet dataset files
// (the odd-one-last layout of the official AligNet release; see
// learner.Generator). Producers store it in Provenance.Extra["order"].
const DatasetOrder = "indices (a,b,c) with c the teacher's odd one out, i.e. (a,b) the most similar pair; similarities (s_ab, s_ac, s_bc), so similarities[:,0] is the largest"

// MaxDatasetTriplets is the most triplets a dataset file can hold.
const MaxDatasetTriplets = npy.MaxElements / 3

// Dataset is an AligNet triplet dataset held in memory.
type Dataset struct {
	// Indices holds N×3 item indices, row-major, odd one out last.
	Indices []int32
	// Similarities holds the N×3 teacher similarities (s_ab, s_ac, s_bc).
	Similarities []float32
	// Filenames holds the N×3 item ids of the indices, when the file has
	// them (nil otherwise).
	Filenames []string
	// Provenance is the file's provenance (zero when it has none).
	Provenance Provenance
}

// Len returns the number of triplets.
func (d *Dataset) Len() int { return len(d.Indices) / 3 }

// DatasetWriter streams a dataset of a known number of triplets into an
// .npz archive in the layout of the official AligNet release:
// "similarities" (N×3 float32), "indices" (N×3 int32), with item ids
// "filenames" (N×3 fixed-width strings, NumPy dtype <Uw for the longest id
// w, so numpy.load needs no allow_pickle) and "meta". Zip members are
// written one at a time, so the similarities go straight to the archive
// while the indices are spooled and copied in, and mapped to filenames,
// by Close.
type DatasetWriter struct {
	zw      *npy.NPZWriter
	sims    io.Writer
	spool   io.ReadWriteSeeker
	mem     *bytes.Buffer
	idx     *bufio.Writer
	ids     []string
	width   int
	total   int64
	written int64
}

// NewDatasetWriter starts a dataset of total triplets on w. ids, when not
// nil, names the items the indices refer to and adds the "filenames"
// member; every index written must then be below len(ids). The indices
// are spooled to spool, which must be empty and is read back from its
// start by Close (a temporary file suits); with a nil spool they are kept
// in memory (12 bytes per triplet).
func NewDatasetWriter(w io.Writer, total int64, spool io.ReadWriteSeeker, ids []string) (*DatasetWriter, error) {
	if total < 0 || total > MaxDatasetTriplets {
		return nil, fmt.Errorf("dataset of %d triplets: want 0 to %d", total, int64(MaxDatasetTriplets))
	}
	dw := &DatasetWriter{zw: npy.NewNPZWriter(w), spool: spool, total: total, ids: ids, width: 1}
	for _, id := range ids {
		dw.width = max(dw.width, utf8.RuneCountInString(id))
	}
	var sw io.Writer = spool
	if spool == nil {
		dw.mem = new(bytes.Buffer)
		sw = dw.mem
	}
	dw.idx = bufio.NewWriterSize(sw, 1<<20)
	var err error
	dw.sims, err = dw.zw.Create("similarities", npy.Header{Dtype: npy.Float32, Shape: []int{int(total), 3}})
	if err != nil {
		return nil, err
	}
	return dw, nil
}

// Write appends len(idx)/3 triplets: idx holds their indices (odd one
// last) and sims their similarities, three per triplet.
func (dw *DatasetWriter) Write(idx []int32, sims []float32) error {
	if len(idx)%3 != 0 || len(sims) != len(idx) {
		return fmt.Errorf("write dataset: %d indices and %d similarities are not whole triplets", len(idx), len(sims))
	}
	m := int64(len(idx) / 3)
	if dw.written+m > dw.total {
		return fmt.Errorf("write dataset: %d triplets exceed the %d announced", dw.written+m, dw.total)
	}
	if dw.ids != nil {
		for _, v := range idx {
			if v < 0 || int(v) >= len(dw.ids) {
				return fmt.Errorf("write dataset: index %d outside the %d named items", v, len(dw.ids))
			}
		}
	}
	if err := npy.WriteData(dw.sims, sims); err != nil {
		return fmt.Errorf("write similarities: %w", err)
	}
	if err := npy.WriteData(dw.idx, idx); err != nil {
		return fmt.Errorf("spool indices: %w", err)
	}
	dw.written += m
	return nil
}

// Close checks that every announced triplet was written, copies the
// indices and p (Kind KindDataset and Version when unset) into the archive
// and finishes it. It does not close w.
func (dw *DatasetWriter) Close(p Provenance) error {
	if dw.written != dw.total {
		return fmt.Errorf("write dataset: %d of %d triplets written", dw.written, dw.total)
	}
	if err := dw.idx.Flush(); err != nil {
		return fmt.Errorf("spool indices: %w", err)
	}
	src, err := dw.spooled()
	if err != nil {
		return err
	}
	iw, err := dw.zw.Create("indices", npy.Header{Dtype: npy.Int32, Shape: []int{int(dw.total), 3}})
	if err != nil {
		return err
	}
	if _, err := io.CopyN(iw, src, 12*dw.total); err != nil {
		return fmt.Errorf("copy indices: %w", err)
	}
	if dw.ids != nil {
		if err := dw.writeFilenames(); err != nil {
			return err
		}
	}
	meta, err := metaArray(p.withDefaults(KindDataset))
	if err != nil {
		return err
	}
	if err := dw.zw.Add("meta", meta); err != nil {
		return err
	}
	return dw.zw.Close()
}

// spooled returns a reader of the spooled indices from their start.
func (dw *DatasetWriter) spooled() (io.Reader, error) {
	if dw.mem != nil {
		return bytes.NewReader(dw.mem.Bytes()), nil
	}
	if _, err := dw.spool.Seek(0, io.SeekStart); err != nil {
		return nil, fmt.Errorf("spool indices: %w", err)
	}
	return bufio.NewReaderSize(dw.spool, 1<<20), nil
}

// writeFilenames writes the "filenames" member from the spooled indices.
func (dw *DatasetWriter) writeFilenames() error {
	src, err := dw.spooled()
	if err != nil {
		return err
	}
	// Encode each item id once; a row of filenames is then three copies.
	el := 4 * dw.width
	enc := make([]byte, el*len(dw.ids))
	for i, id := range dw.ids {
		npy.PutUnicode(enc[i*el:(i+1)*el], id, dw.width)
	}
	fw, err := dw.zw.Create("filenames", npy.Header{Dtype: npy.Unicode(dw.width), Shape: []int{int(dw.total), 3}})
	if err != nil {
		return err
	}
	bw := bufio.NewWriterSize(fw, 1<<20)
	var raw [4 << 10]byte
	for left := 12 * dw.total; left > 0; {
		m := min(int64(len(raw)), left)
		if _, err := io.ReadFull(src, raw[:m]); err != nil {
			return fmt.Errorf("read spooled indices: %w", err)
		}
		for i := int64(0); i < m; i += 4 {
			v := int(binary.LittleEndian.Uint32(raw[i:]))
			if _, err := bw.Write(enc[v*el : (v+1)*el]); err != nil {
				return fmt.Errorf("write filenames: %w", err)
			}
		}
		left -= m
	}
	return bw.Flush()
}

// ReadDataset reads a dataset from the size bytes of r: indices (N×3,
// int32 or int64) and similarities (N×3 float), and the provenance when a
// meta member is present (AligNet datasets from elsewhere have none).
func ReadDataset(r io.ReaderAt, size int64) (*Dataset, error) {
	z, err := npy.OpenNPZ(r, size)
	if err != nil {
		return nil, err
	}
	ia, err := z.Read("indices")
	if err != nil {
		return nil, err
	}
	sa, err := z.Read("similarities")
	if err != nil {
		return nil, err
	}
	if len(ia.Shape) != 2 || ia.Shape[1] != 3 || len(sa.Shape) != 2 || sa.Shape[1] != 3 || ia.Shape[0] != sa.Shape[0] {
		return nil, fmt.Errorf("indices %v and similarities %v must both be N×3", ia.Shape, sa.Shape)
	}
	d := &Dataset{}
	switch v := ia.Data.(type) {
	case []int32:
		d.Indices = v
	default:
		w, err := ia.Int64()
		if err != nil {
			return nil, err
		}
		d.Indices = make([]int32, len(w))
		for i, x := range w {
			if x < 0 || x > 1<<31-1 {
				return nil, fmt.Errorf("index %d out of range", x)
			}
			d.Indices[i] = int32(x)
		}
	}
	if d.Similarities, err = sa.Float32(); err != nil {
		return nil, err
	}
	for _, name := range z.Names() {
		switch name {
		case "meta":
			if d.Provenance, err = readProvenance(z); err != nil {
				return nil, err
			}
		case "filenames":
			fa, err := z.Read("filenames")
			if err != nil {
				return nil, err
			}
			names, ok := fa.Data.([]string)
			if !ok || len(names) != len(d.Indices) {
				return nil, fmt.Errorf("filenames has dtype %s and shape %v, want N×3 strings", fa.Dtype, fa.Shape)
			}
			d.Filenames = names
		}
	}
	return d, nil
}

// SaveDataset writes a dataset of total triplets over the items ids (nil:
// no filenames) to path atomically: fill writes the triplets to the
// DatasetWriter, then p is stored. The indices are spooled to a temporary
// file next to path.
func SaveDataset(path string, total int64, ids []string, p Provenance, fill func(*DatasetWriter) error) error {
	return save(path, func(f *os.File) error {
		spool, err := os.CreateTemp(filepath.Dir(path), ".indices.tmp*")
		if err != nil {
			return fmt.Errorf("spool indices: %w", err)
		}
		defer func() {
			spool.Close()
			os.Remove(spool.Name())
		}()
		bw := bufio.NewWriterSize(f, 1<<20)
		dw, err := NewDatasetWriter(bw, total, spool, ids)
		if err != nil {
			return err
		}
		if err := fill(dw); err != nil {
			return err
		}
		if err := dw.Close(p); err != nil {
			return err
		}
		return bw.Flush()
	})
}

// LoadDataset reads the dataset file at path with ReadDataset.
func LoadDataset(path string) (*Dataset, error) {
	var d *Dataset
	err := load(path, func(r io.ReaderAt, size int64) (err error) {
		d, err = ReadDataset(r, size)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("load dataset: %w", err)
	}
	return d, nil
}
