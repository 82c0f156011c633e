package api

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"mime"
	"mime/multipart"
	"net/http"
	"strings"

	"github.com/alignet/alignet"
	"github.com/alignet/alignet/npy"
	"github.com/labstack/echo/v4"
)

// maxIDsPart caps the "ids" part of a multipart embedding upload.
const maxIDsPart = 64 << 20

// postEmbeddings upserts embeddings into a space, all or nothing. It takes
// application/json {"items":[{"id":..,"vector":[..]}]} or multipart/form-data
// with an "ids" part (JSON array or newline-separated text) followed by a
// "vectors" part holding an n×dim float32 or float64 .npy matrix.
func (s *Server) postEmbeddings(c echo.Context) error {
	s.extendDeadlines(c)
	ctx := c.Request().Context()
	mt, params, err := mime.ParseMediaType(c.Request().Header.Get(echo.HeaderContentType))
	if err != nil {
		mt = ""
	}
	switch mt {
	case echo.MIMEApplicationJSON, echo.MIMEMultipartForm:
	case "application/x-npy", echo.MIMEOctetStream:
		return newErr(http.StatusUnsupportedMediaType, CodeUnsupportedMedia, "",
			"upload .npy matrices as multipart/form-data with an ids part followed by a vectors part")
	default:
		return newErr(http.StatusUnsupportedMediaType, CodeUnsupportedMedia, "",
			"Content-Type must be application/json or multipart/form-data")
	}
	sp, err := s.deps.Spaces.GetSpace(ctx, c.Param("space"))
	if err != nil {
		return storeErr(err, "space", "")
	}
	var ids []string
	var vecs []float32
	var aerr *Error
	if mt == echo.MIMEApplicationJSON {
		body := http.MaxBytesReader(c.Response(), c.Request().Body, s.cfg.MaxEmbeddingJSONBody)
		ids, vecs, aerr = parseEmbeddingsJSON(newTextReader(body), sp.Dim)
	} else {
		body := http.MaxBytesReader(c.Response(), c.Request().Body, s.cfg.MaxEmbeddingBody)
		ids, vecs, aerr = parseEmbeddingsMultipart(body, params["boundary"], sp.Dim, s.cfg.MaxEmbeddingBody)
		if aerr == nil {
			// Read the epilogue too, so the body ends and its read
			// deadline is lifted while the vectors are stored.
			if _, err := io.Copy(io.Discard, body); err != nil {
				aerr = partErr("", err)
			}
		}
	}
	if aerr != nil {
		return aerr
	}
	n, err := s.deps.Spaces.UpsertEmbeddings(ctx, sp.Name, ids, vecs)
	if err != nil {
		return storeErr(err, "space", "")
	}
	return c.JSON(http.StatusOK, map[string]int64{"upserted": n})
}

// idSet validates item ids as they arrive: non-empty text as
// alignet.CheckText accepts it, at most alignet.MaxItemIDLen characters,
// unique.
type idSet map[string]struct{}

func (s idSet) add(id, field string) *Error {
	if id == "" {
		return invalid(field, "ids must not be empty")
	}
	if msg := alignet.CheckText(id, alignet.MaxItemIDLen); msg != "" {
		return invalid(field, "id %s", msg)
	}
	if _, dup := s[id]; dup {
		return invalid(field, "id %q appears twice", truncate(id, alignet.MaxItemIDLen))
	}
	s[id] = struct{}{}
	return nil
}

func finite32(v float64) bool { return !math.IsNaN(v) && math.Abs(v) <= math.MaxFloat32 }

// parseEmbeddingsJSON stream-decodes {"items":[{"id":..,"vector":[..]}]}.
func parseEmbeddingsJSON(r io.Reader, dim int) ([]string, []float32, *Error) {
	dec := json.NewDecoder(r)
	dec.DisallowUnknownFields()
	if err := expectDelim(dec, '{'); err != nil {
		return nil, nil, err
	}
	var ids []string
	var vecs []float32
	seen := idSet{}
	gotItems := false
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, nil, jsonDecodeErr(err)
		}
		if key, _ := tok.(string); key != "items" {
			return nil, nil, badJSON(fmt.Sprint(tok), "unknown field %q", fmt.Sprint(tok))
		}
		if gotItems {
			return nil, nil, badJSON("items", "items appears twice")
		}
		gotItems = true
		if err := expectDelim(dec, '['); err != nil {
			return nil, nil, err.withPrefix("items")
		}
		for i := 0; dec.More(); i++ {
			field := "items[" + itoa(i) + "]"
			var it struct {
				ID     *string   `json:"id"`
				Vector []float64 `json:"vector"`
			}
			if err := dec.Decode(&it); err != nil {
				return nil, nil, jsonDecodeErr(err).withPrefix(field)
			}
			if it.ID == nil {
				return nil, nil, missing(field + ".id")
			}
			if err := seen.add(*it.ID, field+".id"); err != nil {
				return nil, nil, err
			}
			if it.Vector == nil {
				return nil, nil, missing(field + ".vector")
			}
			if len(it.Vector) != dim {
				return nil, nil, invalid(field+".vector", "vector has %d values, the space has dim %d", len(it.Vector), dim)
			}
			for k, v := range it.Vector {
				if !finite32(v) {
					return nil, nil, invalid(fmt.Sprintf("%s.vector[%d]", field, k), "value is not a finite float32")
				}
				vecs = append(vecs, float32(v))
			}
			ids = append(ids, *it.ID)
		}
		if err := expectDelim(dec, ']'); err != nil {
			return nil, nil, err
		}
	}
	if err := expectDelim(dec, '}'); err != nil {
		return nil, nil, err
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		if e := readErr(err); e != nil {
			return nil, nil, e
		}
		return nil, nil, badJSON("", "unexpected data after the JSON value")
	}
	if !gotItems {
		return nil, nil, missing("items")
	}
	if len(ids) == 0 {
		return nil, nil, invalid("items", "items must not be empty")
	}
	return ids, vecs, nil
}

func expectDelim(dec *json.Decoder, want json.Delim) *Error {
	tok, err := dec.Token()
	if err != nil {
		if errors.Is(err, io.EOF) {
			return jsonDecodeErr(io.ErrUnexpectedEOF)
		}
		return jsonDecodeErr(err)
	}
	if d, ok := tok.(json.Delim); !ok || d != want {
		return badJSON("", "expected %q, got %v", string(want), tok)
	}
	return nil
}

// parseEmbeddingsMultipart reads the ids part and then streams the vectors
// part straight into one float32 slice.
func parseEmbeddingsMultipart(body io.Reader, boundary string, dim int, limit int64) ([]string, []float32, *Error) {
	if boundary == "" {
		return nil, nil, badBody("", "multipart Content-Type lacks a boundary")
	}
	mr := multipart.NewReader(body, boundary)
	var ids []string
	var vecs []float32
	gotIDs, gotVecs := false, false
	for {
		part, err := mr.NextPart()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, nil, partErr("", err)
		}
		name := part.FormName()
		switch name {
		case "ids":
			if gotIDs {
				return nil, nil, badBody("ids", "the ids part appears twice")
			}
			gotIDs = true
			var aerr *Error
			if ids, aerr = parseIDs(part); aerr != nil {
				return nil, nil, aerr
			}
		case "vectors":
			if !gotIDs {
				return nil, nil, invalid("ids", "the ids part must come before the vectors part")
			}
			if gotVecs {
				return nil, nil, badBody("vectors", "the vectors part appears twice")
			}
			gotVecs = true
			var aerr *Error
			if vecs, aerr = readVectors(part, len(ids), dim, limit); aerr != nil {
				return nil, nil, aerr
			}
		default:
			return nil, nil, badBody(name, "unknown part %q; expected ids and vectors", truncate(name, 64))
		}
		_ = part.Close()
	}
	if !gotIDs {
		return nil, nil, missing("ids")
	}
	if !gotVecs {
		return nil, nil, missing("vectors")
	}
	return ids, vecs, nil
}

func partErr(field string, err error) *Error {
	if e := readErr(err); e != nil {
		return e
	}
	e := badBody(field, "malformed multipart body: %v", err)
	e.Err = err
	return e
}

// parseIDs reads a JSON array of strings or newline-separated ids.
func parseIDs(r io.Reader) ([]string, *Error) {
	b, err := io.ReadAll(io.LimitReader(r, maxIDsPart+1))
	if err != nil {
		return nil, partErr("ids", err)
	}
	if len(b) > maxIDsPart {
		return nil, newErr(http.StatusRequestEntityTooLarge, CodeTooLarge, "ids", "the ids part exceeds %d bytes", maxIDsPart)
	}
	var ids []string
	trimmed := bytes.TrimSpace(b)
	if len(trimmed) > 0 && trimmed[0] == '[' {
		if err := checkText(trimmed); err != nil {
			return nil, err.withPrefix("ids")
		}
		if err := json.Unmarshal(trimmed, &ids); err != nil {
			return nil, jsonDecodeErr(err).withPrefix("ids")
		}
	} else {
		text := strings.TrimSuffix(string(b), "\n")
		if text != "" {
			ids = strings.Split(text, "\n")
		}
		for i, id := range ids {
			ids[i] = strings.TrimSuffix(id, "\r")
		}
	}
	if len(ids) == 0 {
		return nil, invalid("ids", "ids must not be empty")
	}
	seen := make(idSet, len(ids))
	for i, id := range ids {
		if err := seen.add(id, "ids["+itoa(i)+"]"); err != nil {
			return nil, err
		}
	}
	return ids, nil
}

// readVectors reads an n×dim float32 or float64 .npy matrix into float32,
// checking that every value is finite and nothing follows the data.
func readVectors(r io.Reader, n, dim int, limit int64) ([]float32, *Error) {
	br := bufio.NewReaderSize(r, 1<<16)
	h, err := npy.ReadHeader(br)
	if err != nil {
		if e := readErr(err); e != nil {
			return nil, e
		}
		return nil, badBody("vectors", "vectors is not a valid .npy file: %v", err)
	}
	if h.Dtype != npy.Float32 && h.Dtype != npy.Float64 {
		return nil, invalid("vectors", "vectors must be float32 (<f4) or float64 (<f8), got %s", h.Dtype)
	}
	if len(h.Shape) != 2 {
		return nil, invalid("vectors", "vectors must be a 2-D matrix, got shape %v", h.Shape)
	}
	if h.Shape[0] != n {
		return nil, invalid("vectors", "vectors has %d rows but there are %d ids", h.Shape[0], n)
	}
	if h.Shape[1] != dim {
		return nil, invalid("vectors", "vectors has %d columns, the space has dim %d", h.Shape[1], dim)
	}
	size := npy.ItemSize(h.Dtype)
	if int64(n)*int64(dim)*int64(size) > limit {
		return nil, newErr(http.StatusRequestEntityTooLarge, CodeTooLarge, "vectors",
			"a %d×%d matrix exceeds the %d-byte body limit", n, dim, limit)
	}
	out := make([]float32, n*dim)
	buf := make([]byte, (1<<16)/size*size)
	for done := 0; done < len(out); {
		k := min(len(buf)/size, len(out)-done)
		if _, err := io.ReadFull(br, buf[:k*size]); err != nil {
			if e := readErr(err); e != nil {
				return nil, e
			}
			return nil, badBody("vectors", "vectors ends after %d of %d values", done, len(out))
		}
		for i := 0; i < k; i++ {
			var v float32
			if size == 4 {
				v = math.Float32frombits(binary.LittleEndian.Uint32(buf[i*4:]))
				if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
					return nil, nonFinite(done+i, dim)
				}
			} else {
				f := math.Float64frombits(binary.LittleEndian.Uint64(buf[i*8:]))
				if !finite32(f) {
					return nil, nonFinite(done+i, dim)
				}
				v = float32(f)
			}
			out[done+i] = v
		}
		done += k
	}
	if m, err := br.Read(buf[:1]); m > 0 || (err != nil && !errors.Is(err, io.EOF)) {
		if err != nil {
			return nil, partErr("vectors", err)
		}
		return nil, invalid("vectors", "vectors has data after the %d×%d matrix", n, dim)
	}
	return out, nil
}

func nonFinite(i, dim int) *Error {
	return invalid("vectors", "value at row %d, column %d is not a finite float32", i/dim, i%dim)
}
