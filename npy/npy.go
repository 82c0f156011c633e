// Package npy reads and writes NumPy .npy arrays and .npz archives on plain
// readers and writers, so Python users can exchange matrices with alignet.
//
// Only little-endian numeric dtypes in C order are supported: <f4, <f8, <i4,
// <i8, |u1 and |i1 (and |b1 read as uint8).
package npy

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
)

// Dtype names understood by this package.
const (
	Float32 = "<f4"
	Float64 = "<f8"
	Int32   = "<i4"
	Int64   = "<i8"
	Uint8   = "|u1"
	Int8    = "|i1"
)

// MaxHeaderLen bounds the header so that hostile input cannot make Read
// allocate without limit.
const MaxHeaderLen = 1 << 16

// MaxElements bounds the number of elements Read accepts (4 Gi elements).
const MaxElements = 1 << 32

var magic = []byte("\x93NUMPY")

// ErrFortranOrder is the error for an array stored in Fortran (column-major)
// order. NumPy saves a transposed view, such as x.T, that way.
var ErrFortranOrder = errors.New("the .npy array is Fortran-ordered (column-major), as NumPy saves a transposed view such as x.T; only C order is supported: save np.ascontiguousarray(x) instead, and check that rows are items (transpose the matrix if not)")

// Array is a dense C-ordered array. Data holds one of []float32, []float64,
// []int32, []int64, []uint8 or []int8 matching Dtype, or []string for a
// fixed-width string dtype (Unicode) read by Read.
type Array struct {
	Dtype string
	Shape []int
	Data  any
}

// Len returns the number of elements implied by the shape.
func (a *Array) Len() int { return numElements(a.Shape) }

func numElements(shape []int) int {
	n := 1
	for _, s := range shape {
		n *= s
	}
	return n
}

// ItemSize returns the size in bytes of one element of dtype, or 0 if the
// dtype is not supported.
func ItemSize(dtype string) int {
	switch dtype {
	case Float32, Int32:
		return 4
	case Float64, Int64:
		return 8
	case Uint8, Int8, "|b1":
		return 1
	}
	if n, ok := unicodeWidth(dtype); ok {
		return 4 * n
	}
	return 0
}

// Unicode returns the dtype of fixed-width strings of n characters,
// "<Un": NumPy's str_ dtype, which numpy.load reads without allow_pickle.
// Each element is n little-endian UTF-32 code points, NUL padded.
func Unicode(n int) string { return "<U" + strconv.Itoa(n) }

// unicodeWidth parses a "<Un" dtype.
func unicodeWidth(dtype string) (int, bool) {
	rest, ok := strings.CutPrefix(dtype, "<U")
	if !ok {
		return 0, false
	}
	n, err := strconv.Atoi(rest)
	if err != nil || n < 1 || n > 1<<20 {
		return 0, false
	}
	return n, true
}

// unicodeString decodes one "<Un" element, dropping the NUL padding.
func unicodeString(b []byte) string {
	var sb strings.Builder
	for i := 0; i+4 <= len(b); i += 4 {
		r := rune(binary.LittleEndian.Uint32(b[i:]))
		if r == 0 {
			break
		}
		sb.WriteRune(r)
	}
	return sb.String()
}

// PutUnicode writes s as one element of dtype Unicode(n) into dst (4n
// bytes): its code points, then NULs. s must have at most n code points.
func PutUnicode(dst []byte, s string, n int) {
	i := 0
	for _, r := range s {
		binary.LittleEndian.PutUint32(dst[4*i:], uint32(r))
		i++
	}
	clear(dst[4*i : 4*n])
}

// Header describes an array without its data.
type Header struct {
	Dtype string
	Shape []int
}

// ReadHeader reads the magic string and header of a .npy stream, leaving r
// positioned at the first data byte.
func ReadHeader(r io.Reader) (Header, error) {
	var pre [8]byte
	if _, err := io.ReadFull(r, pre[:]); err != nil {
		return Header{}, fmt.Errorf("read npy magic: %w", err)
	}
	if !bytes.Equal(pre[:6], magic) {
		return Header{}, errors.New("not a .npy file: bad magic")
	}
	var hlen int
	switch pre[6] {
	case 1:
		var b [2]byte
		if _, err := io.ReadFull(r, b[:]); err != nil {
			return Header{}, fmt.Errorf("read npy header length: %w", err)
		}
		hlen = int(binary.LittleEndian.Uint16(b[:]))
	case 2, 3:
		var b [4]byte
		if _, err := io.ReadFull(r, b[:]); err != nil {
			return Header{}, fmt.Errorf("read npy header length: %w", err)
		}
		hlen = int(binary.LittleEndian.Uint32(b[:]))
	default:
		return Header{}, fmt.Errorf("unsupported npy version %d", pre[6])
	}
	if hlen > MaxHeaderLen {
		return Header{}, fmt.Errorf("npy header too long (%d bytes)", hlen)
	}
	buf := make([]byte, hlen)
	if _, err := io.ReadFull(r, buf); err != nil {
		return Header{}, fmt.Errorf("read npy header: %w", err)
	}
	return parseHeader(string(buf))
}

func parseHeader(h string) (Header, error) {
	h = strings.TrimSpace(h)
	if !strings.HasPrefix(h, "{") || !strings.HasSuffix(h, "}") {
		return Header{}, errors.New("npy header is not a dict")
	}
	descr, err := dictValue(h, "descr")
	if err != nil {
		return Header{}, err
	}
	descr = strings.Trim(descr, "'\"")
	if descr == "<b1" {
		descr = "|b1"
	}
	if ItemSize(descr) == 0 {
		return Header{}, fmt.Errorf("unsupported npy dtype %q", descr)
	}
	order, err := dictValue(h, "fortran_order")
	if err != nil {
		return Header{}, err
	}
	if order != "False" {
		return Header{}, ErrFortranOrder
	}
	shapeStr, err := dictValue(h, "shape")
	if err != nil {
		return Header{}, err
	}
	shapeStr = strings.TrimSpace(shapeStr)
	if !strings.HasPrefix(shapeStr, "(") || !strings.HasSuffix(shapeStr, ")") {
		return Header{}, fmt.Errorf("bad npy shape %q", shapeStr)
	}
	var shape []int
	n := 1
	for _, part := range strings.Split(shapeStr[1:len(shapeStr)-1], ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		v, err := strconv.Atoi(strings.TrimSuffix(part, "L"))
		if err != nil || v < 0 {
			return Header{}, fmt.Errorf("bad npy shape %q", shapeStr)
		}
		if v > 0 && n > MaxElements/v {
			return Header{}, fmt.Errorf("npy array too large: shape %s", shapeStr)
		}
		n *= v
		shape = append(shape, v)
	}
	if len(shape) > 8 {
		return Header{}, fmt.Errorf("npy array has too many dimensions (%d)", len(shape))
	}
	return Header{Dtype: descr, Shape: shape}, nil
}

// dictValue extracts the raw value of key from a Python dict literal.
func dictValue(h, key string) (string, error) {
	for _, q := range []string{"'", "\""} {
		i := strings.Index(h, q+key+q)
		if i < 0 {
			continue
		}
		rest := strings.TrimSpace(h[i+len(key)+2:])
		if !strings.HasPrefix(rest, ":") {
			return "", fmt.Errorf("bad npy header near %q", key)
		}
		rest = strings.TrimSpace(rest[1:])
		if strings.HasPrefix(rest, "(") {
			j := strings.Index(rest, ")")
			if j < 0 {
				return "", errors.New("bad npy header: unterminated shape")
			}
			return rest[:j+1], nil
		}
		j := strings.IndexAny(rest, ",}")
		if j < 0 {
			return "", fmt.Errorf("bad npy header near %q", key)
		}
		return strings.TrimSpace(rest[:j]), nil
	}
	return "", fmt.Errorf("npy header lacks %q", key)
}

// Read reads a whole .npy array.
func Read(r io.Reader) (*Array, error) {
	h, err := ReadHeader(r)
	if err != nil {
		return nil, err
	}
	n := numElements(h.Shape)
	br := bufio.NewReaderSize(r, 1<<16)
	a := &Array{Dtype: h.Dtype, Shape: h.Shape}
	switch h.Dtype {
	case Float32:
		d := make([]float32, 0, min(n, 1<<20))
		a.Data, err = readChunks(br, n, 4, d, func(b []byte) float32 { return math.Float32frombits(binary.LittleEndian.Uint32(b)) })
	case Float64:
		d := make([]float64, 0, min(n, 1<<20))
		a.Data, err = readChunks(br, n, 8, d, func(b []byte) float64 { return math.Float64frombits(binary.LittleEndian.Uint64(b)) })
	case Int32:
		d := make([]int32, 0, min(n, 1<<20))
		a.Data, err = readChunks(br, n, 4, d, func(b []byte) int32 { return int32(binary.LittleEndian.Uint32(b)) })
	case Int64:
		d := make([]int64, 0, min(n, 1<<20))
		a.Data, err = readChunks(br, n, 8, d, func(b []byte) int64 { return int64(binary.LittleEndian.Uint64(b)) })
	case Uint8, "|b1":
		a.Dtype = Uint8
		d := make([]uint8, 0, min(n, 1<<20))
		a.Data, err = readChunks(br, n, 1, d, func(b []byte) uint8 { return b[0] })
	case Int8:
		d := make([]int8, 0, min(n, 1<<20))
		a.Data, err = readChunks(br, n, 1, d, func(b []byte) int8 { return int8(b[0]) })
	default:
		w, _ := unicodeWidth(h.Dtype) // ReadHeader accepted it
		d := make([]string, 0, min(n, 1<<20))
		a.Data, err = readChunks(br, n, 4*w, d, func(b []byte) string { return unicodeString(b[:4*w]) })
	}
	if err != nil {
		return nil, err
	}
	return a, nil
}

// readChunks grows dst as data arrives, so a lying header cannot force a
// huge allocation before the bytes exist.
func readChunks[T any](r io.Reader, n, size int, dst []T, conv func([]byte) T) ([]T, error) {
	buf := make([]byte, 1<<16)
	per := len(buf) / size
	for len(dst) < n {
		k := min(per, n-len(dst))
		if _, err := io.ReadFull(r, buf[:k*size]); err != nil {
			return nil, fmt.Errorf("read npy data: element %d of %d: %w", len(dst), n, err)
		}
		for i := 0; i < k; i++ {
			dst = append(dst, conv(buf[i*size:]))
		}
	}
	return dst, nil
}

// ReadFloat32 reads a .npy array and converts it to float32. Float64 and
// integer arrays are converted; the shape is returned unchanged.
func ReadFloat32(r io.Reader) ([]float32, []int, error) {
	a, err := Read(r)
	if err != nil {
		return nil, nil, err
	}
	f, err := a.Float32()
	return f, a.Shape, err
}

// Float32 returns the data converted to float32.
func (a *Array) Float32() ([]float32, error) {
	switch d := a.Data.(type) {
	case []float32:
		return d, nil
	case []float64:
		return convert[float64, float32](d), nil
	case []int32:
		return convert[int32, float32](d), nil
	case []int64:
		return convert[int64, float32](d), nil
	case []uint8:
		return convert[uint8, float32](d), nil
	case []int8:
		return convert[int8, float32](d), nil
	}
	return nil, fmt.Errorf("npy: unsupported data type %T", a.Data)
}

// Int64 returns the data converted to int64. Float data is rejected.
func (a *Array) Int64() ([]int64, error) {
	switch d := a.Data.(type) {
	case []int64:
		return d, nil
	case []int32:
		return convert[int32, int64](d), nil
	case []uint8:
		return convert[uint8, int64](d), nil
	case []int8:
		return convert[int8, int64](d), nil
	}
	return nil, fmt.Errorf("npy: array of %s is not integer", a.Dtype)
}

type number interface {
	~float32 | ~float64 | ~int32 | ~int64 | ~uint8 | ~int8
}

func convert[S, D number](s []S) []D {
	d := make([]D, len(s))
	for i, v := range s {
		d[i] = D(v)
	}
	return d
}

// WriteHeader writes the magic string and a version 1.0 header (2.0 if the
// header does not fit).
func WriteHeader(w io.Writer, h Header) error {
	if ItemSize(h.Dtype) == 0 {
		return fmt.Errorf("unsupported npy dtype %q", h.Dtype)
	}
	var shape string
	switch len(h.Shape) {
	case 0:
		shape = "()"
	case 1:
		shape = fmt.Sprintf("(%d,)", h.Shape[0])
	default:
		parts := make([]string, len(h.Shape))
		for i, s := range h.Shape {
			parts[i] = strconv.Itoa(s)
		}
		shape = "(" + strings.Join(parts, ", ") + ")"
	}
	dict := fmt.Sprintf("{'descr': '%s', 'fortran_order': False, 'shape': %s, }", h.Dtype, shape)
	// Total header (magic+version+len+dict+pad+\n) is a multiple of 64.
	ver, lenBytes := byte(1), 2
	total := 6 + 2 + lenBytes + len(dict) + 1
	if total+63 > 65535+10 {
		ver, lenBytes = 2, 4
		total = 6 + 2 + lenBytes + len(dict) + 1
	}
	pad := (64 - total%64) % 64
	hdr := dict + strings.Repeat(" ", pad) + "\n"
	buf := append([]byte{}, magic...)
	buf = append(buf, ver, 0)
	if ver == 1 {
		buf = binary.LittleEndian.AppendUint16(buf, uint16(len(hdr)))
	} else {
		buf = binary.LittleEndian.AppendUint32(buf, uint32(len(hdr)))
	}
	buf = append(buf, hdr...)
	_, err := w.Write(buf)
	return err
}

// Write writes a as a .npy stream.
func Write(w io.Writer, a *Array) error {
	if a.Len() != dataLen(a.Data) {
		return fmt.Errorf("npy: shape %v holds %d elements, data has %d", a.Shape, a.Len(), dataLen(a.Data))
	}
	if want := dtypeOf(a.Data); want != a.Dtype {
		return fmt.Errorf("npy: dtype %q does not match data %T", a.Dtype, a.Data)
	}
	if err := WriteHeader(w, Header{Dtype: a.Dtype, Shape: a.Shape}); err != nil {
		return err
	}
	return WriteData(w, a.Data)
}

// WriteData writes raw little-endian elements, for streaming an array
// after WriteHeader or NPZWriter.Create.
func WriteData(w io.Writer, data any) error {
	bw := bufio.NewWriterSize(w, 1<<16)
	var err error
	switch d := data.(type) {
	case []float32:
		err = writeChunks(bw, d, 4, func(b []byte, v float32) { binary.LittleEndian.PutUint32(b, math.Float32bits(v)) })
	case []float64:
		err = writeChunks(bw, d, 8, func(b []byte, v float64) { binary.LittleEndian.PutUint64(b, math.Float64bits(v)) })
	case []int32:
		err = writeChunks(bw, d, 4, func(b []byte, v int32) { binary.LittleEndian.PutUint32(b, uint32(v)) })
	case []int64:
		err = writeChunks(bw, d, 8, func(b []byte, v int64) { binary.LittleEndian.PutUint64(b, uint64(v)) })
	case []uint8:
		_, err = bw.Write(d)
	case []int8:
		err = writeChunks(bw, d, 1, func(b []byte, v int8) { b[0] = byte(v) })
	default:
		return fmt.Errorf("npy: unsupported data type %T", data)
	}
	if err != nil {
		return err
	}
	return bw.Flush()
}

func writeChunks[T any](w io.Writer, d []T, size int, put func([]byte, T)) error {
	buf := make([]byte, 1<<16)
	per := len(buf) / size
	for len(d) > 0 {
		k := min(per, len(d))
		for i := 0; i < k; i++ {
			put(buf[i*size:], d[i])
		}
		if _, err := w.Write(buf[:k*size]); err != nil {
			return err
		}
		d = d[k:]
	}
	return nil
}

func dataLen(data any) int {
	switch d := data.(type) {
	case []float32:
		return len(d)
	case []float64:
		return len(d)
	case []int32:
		return len(d)
	case []int64:
		return len(d)
	case []uint8:
		return len(d)
	case []int8:
		return len(d)
	}
	return -1
}

func dtypeOf(data any) string {
	switch data.(type) {
	case []float32:
		return Float32
	case []float64:
		return Float64
	case []int32:
		return Int32
	case []int64:
		return Int64
	case []uint8:
		return Uint8
	case []int8:
		return Int8
	}
	return ""
}

// FromFloat32 wraps a float32 slice as an array of the given shape.
func FromFloat32(data []float32, shape ...int) *Array {
	return &Array{Dtype: Float32, Shape: shape, Data: data}
}

// FromInt32 wraps an int32 slice as an array of the given shape.
func FromInt32(data []int32, shape ...int) *Array {
	return &Array{Dtype: Int32, Shape: shape, Data: data}
}

// FromInt64 wraps an int64 slice as an array of the given shape.
func FromInt64(data []int64, shape ...int) *Array {
	return &Array{Dtype: Int64, Shape: shape, Data: data}
}

// FromFloat64 wraps a float64 slice as an array of the given shape.
func FromFloat64(data []float64, shape ...int) *Array {
	return &Array{Dtype: Float64, Shape: shape, Data: data}
}
