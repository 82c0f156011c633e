package npy

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func TestRoundTrip(t *testing.T) {
	cases := []*Array{
		FromFloat32([]float32{1, -2.5, 3, 4, 5, 6}, 2, 3),
		FromFloat64([]float64{1e-300, 2}, 2),
		FromInt32([]int32{-7, 8, 9}, 3, 1),
		FromInt64([]int64{1 << 40}, 1),
		{Dtype: Uint8, Shape: []int{2}, Data: []uint8{0, 255}},
		FromFloat32([]float32{}, 0, 5),
	}
	for _, a := range cases {
		var buf bytes.Buffer
		if err := Write(&buf, a); err != nil {
			t.Fatalf("write %s: %v", a.Dtype, err)
		}
		if buf.Len() < 64 || (buf.Len()-a.Len()*ItemSize(a.Dtype))%64 != 0 {
			t.Errorf("%s: header not padded to 64 bytes (total %d)", a.Dtype, buf.Len())
		}
		got, err := Read(&buf)
		if err != nil {
			t.Fatalf("read %s: %v", a.Dtype, err)
		}
		if !reflect.DeepEqual(got.Shape, a.Shape) || got.Dtype != a.Dtype || !reflect.DeepEqual(got.Data, a.Data) {
			t.Errorf("round trip %s: got %+v want %+v", a.Dtype, got, a)
		}
	}
}

func TestWriteRejectsShapeMismatch(t *testing.T) {
	if err := Write(&bytes.Buffer{}, FromFloat32([]float32{1, 2, 3}, 2, 2)); err == nil {
		t.Fatal("expected error for 3 elements in a 2x2 shape")
	}
}

func TestReadRejectsTruncated(t *testing.T) {
	var buf bytes.Buffer
	if err := Write(&buf, FromFloat32([]float32{1, 2, 3, 4}, 4)); err != nil {
		t.Fatal(err)
	}
	if _, err := Read(bytes.NewReader(buf.Bytes()[:buf.Len()-3])); err == nil {
		t.Fatal("expected error for truncated data")
	}
}

func TestNPZRoundTripStreaming(t *testing.T) {
	var buf bytes.Buffer
	z := NewNPZWriter(&buf)
	if err := z.Add("indices", FromInt32([]int32{0, 1, 2, 3, 4, 5}, 2, 3)); err != nil {
		t.Fatal(err)
	}
	w, err := z.Create("similarities", Header{Dtype: Float32, Shape: []int{2, 3}})
	if err != nil {
		t.Fatal(err)
	}
	for _, chunk := range [][]float32{{1, 2, 3}, {4, 5, 6}} {
		if err := WriteData(w, chunk); err != nil {
			t.Fatal(err)
		}
	}
	if err := z.Close(); err != nil {
		t.Fatal(err)
	}
	r, err := OpenNPZ(bytes.NewReader(buf.Bytes()), int64(buf.Len()))
	if err != nil {
		t.Fatal(err)
	}
	if got := r.Names(); !reflect.DeepEqual(got, []string{"indices", "similarities"}) {
		t.Fatalf("names = %v", got)
	}
	s, err := r.Read("similarities")
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(s.Data, []float32{1, 2, 3, 4, 5, 6}) {
		t.Fatalf("similarities = %v", s.Data)
	}
}

// TestReadsNumPyFile reads a matrix written by NumPy itself.
func TestReadsNumPyFile(t *testing.T) {
	path := filepath.Join("..", "..", "shared", "data", "things", "clip_vit_b32.npy")
	f, err := os.Open(path)
	if os.IsNotExist(err) {
		t.Skip("shared data folder missing")
	}
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	data, shape, err := ReadFloat32(f)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(shape, []int{1854, 512}) || len(data) != 1854*512 {
		t.Fatalf("shape %v, %d values", shape, len(data))
	}
	var nonzero int
	for _, v := range data[:512] {
		if v != 0 {
			nonzero++
		}
	}
	if nonzero < 400 {
		t.Fatalf("first row looks empty: %d nonzero values", nonzero)
	}
}

func FuzzRead(f *testing.F) {
	var buf bytes.Buffer
	_ = Write(&buf, FromFloat32([]float32{1, 2, 3, 4}, 2, 2))
	f.Add(buf.Bytes())
	buf.Reset()
	_ = Write(&buf, FromInt64([]int64{1, 2}, 2))
	f.Add(buf.Bytes())
	f.Add([]byte("\x93NUMPY\x01\x00\x10\x00{'descr': '<f4'}"))
	f.Fuzz(func(t *testing.T, b []byte) {
		a, err := Read(bytes.NewReader(b))
		if err != nil {
			return
		}
		if a.Len() != dataLen(a.Data) {
			t.Fatalf("shape %v but %d elements", a.Shape, dataLen(a.Data))
		}
		var out bytes.Buffer
		if err := Write(&out, a); err != nil {
			t.Fatalf("re-encode: %v", err)
		}
	})
}

// TestFortranOrderHint checks that a Fortran-ordered array, which is how
// NumPy saves a transposed view (np.save("x.npy", x.T)), is refused with
// the fix in the message.
func TestFortranOrderHint(t *testing.T) {
	var buf bytes.Buffer
	if err := Write(&buf, FromFloat32([]float32{1, 2, 3, 4, 5, 6}, 2, 3)); err != nil {
		t.Fatal(err)
	}
	b := bytes.Replace(buf.Bytes(), []byte("'fortran_order': False"), []byte("'fortran_order': True "), 1)
	if bytes.Equal(b, buf.Bytes()) {
		t.Fatal("test setup: header has no fortran_order False")
	}
	_, err := Read(bytes.NewReader(b))
	if !errors.Is(err, ErrFortranOrder) {
		t.Fatalf("Read = %v, want ErrFortranOrder", err)
	}
	for _, want := range []string{"np.ascontiguousarray(x)", "transpose", "x.T"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %s", err, want)
		}
	}
}

func TestUnicodeHeaderAndElements(t *testing.T) {
	if got := ItemSize(Unicode(7)); got != 28 {
		t.Fatalf("ItemSize(%s) = %d", Unicode(7), got)
	}
	if ItemSize("<U0") != 0 || ItemSize("<Ux") != 0 {
		t.Fatal("bad unicode dtypes accepted")
	}
	var buf bytes.Buffer
	if err := WriteHeader(&buf, Header{Dtype: Unicode(3), Shape: []int{2}}); err != nil {
		t.Fatal(err)
	}
	h, err := ReadHeader(&buf)
	if err != nil || h.Dtype != "<U3" || h.Shape[0] != 2 {
		t.Fatalf("header %+v, %v", h, err)
	}
	el := make([]byte, 12)
	for i := range el {
		el[i] = 0xff
	}
	PutUnicode(el, "aé", 3)
	if got := unicodeString(el); got != "aé" {
		t.Fatalf("unicodeString = %q", got)
	}
	want := []byte{'a', 0, 0, 0, 0xe9, 0, 0, 0, 0, 0, 0, 0}
	if !bytes.Equal(el, want) {
		t.Fatalf("PutUnicode = %v, want %v", el, want)
	}
}
