package npy

import (
	"archive/zip"
	"fmt"
	"io"
	"sort"
	"strings"
)

// NPZWriter writes a .npz archive (a zip of .npy members) entry by entry, so
// arrays larger than memory can be streamed.
type NPZWriter struct {
	zw *zip.Writer
}

// NewNPZWriter returns a writer that appends members to w. Members are
// stored uncompressed, as numpy.savez does.
func NewNPZWriter(w io.Writer) *NPZWriter { return &NPZWriter{zw: zip.NewWriter(w)} }

// Add writes a whole array as member name (".npy" is appended).
func (z *NPZWriter) Add(name string, a *Array) error {
	w, err := z.zw.CreateHeader(&zip.FileHeader{Name: name + ".npy", Method: zip.Store})
	if err != nil {
		return fmt.Errorf("npz add %s: %w", name, err)
	}
	if err := Write(w, a); err != nil {
		return fmt.Errorf("npz add %s: %w", name, err)
	}
	return nil
}

// Create starts member name with the given header and returns a writer for
// its raw data; write exactly the number of elements the shape implies
// (WriteData helps) before the next Create, Add or Close.
func (z *NPZWriter) Create(name string, h Header) (io.Writer, error) {
	w, err := z.zw.CreateHeader(&zip.FileHeader{Name: name + ".npy", Method: zip.Store})
	if err != nil {
		return nil, fmt.Errorf("npz create %s: %w", name, err)
	}
	if err := WriteHeader(w, h); err != nil {
		return nil, fmt.Errorf("npz create %s: %w", name, err)
	}
	return w, nil
}

// Close finishes the archive. It does not close the underlying writer.
func (z *NPZWriter) Close() error { return z.zw.Close() }

// NPZ is an opened .npz archive.
type NPZ struct {
	zr *zip.Reader
}

// OpenNPZ opens an archive from a random-access reader of the given size.
func OpenNPZ(r io.ReaderAt, size int64) (*NPZ, error) {
	zr, err := zip.NewReader(r, size)
	if err != nil {
		return nil, fmt.Errorf("open npz: %w", err)
	}
	return &NPZ{zr: zr}, nil
}

// Names lists the member arrays, without the ".npy" suffix, sorted.
func (z *NPZ) Names() []string {
	var names []string
	for _, f := range z.zr.File {
		names = append(names, strings.TrimSuffix(f.Name, ".npy"))
	}
	sort.Strings(names)
	return names
}

// Open returns a reader positioned at the start of member name's .npy
// stream, for callers that want to stream it with ReadHeader.
func (z *NPZ) Open(name string) (io.ReadCloser, error) {
	for _, f := range z.zr.File {
		if f.Name == name+".npy" || f.Name == name {
			rc, err := f.Open()
			if err != nil {
				return nil, fmt.Errorf("npz open %s: %w", name, err)
			}
			return rc, nil
		}
	}
	return nil, fmt.Errorf("npz has no array %q", name)
}

// Read reads member name whole.
func (z *NPZ) Read(name string) (*Array, error) {
	rc, err := z.Open(name)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	a, err := Read(rc)
	if err != nil {
		return nil, fmt.Errorf("npz read %s: %w", name, err)
	}
	return a, nil
}
