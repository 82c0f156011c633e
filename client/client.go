// Package client is a Go client for the alignet HTTP API. The import and
// loadgen subcommands use it, and so can training pipelines and tools.
package client

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"mime/multipart"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/alignet/alignet/npy"
)

// Client calls one alignet server with one API key. It is safe for
// concurrent use.
type Client struct {
	base string
	key  string
	http *http.Client
}

// New returns a client for the server at baseURL (for example
// "http://127.0.0.1:8080") authenticating with key. A nil httpClient gets a
// pooled client suited to many concurrent requests.
func New(baseURL, key string, httpClient *http.Client) *Client {
	if httpClient == nil {
		tr := &http.Transport{
			Proxy:               nil,
			DialContext:         (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
			MaxIdleConns:        1024,
			MaxIdleConnsPerHost: 1024,
			IdleConnTimeout:     90 * time.Second,
		}
		httpClient = &http.Client{Transport: tr}
	}
	return &Client{base: strings.TrimRight(baseURL, "/"), key: key, http: httpClient}
}

// Error is a non-2xx answer from the server.
type Error struct {
	// Status is the HTTP status code.
	Status int
	// Code, Message and Field are the error body's fields: a stable code
	// such as "unknown_item", a sentence, and the request field at fault.
	Code    string `json:"code"`
	Message string `json:"message"`
	Field   string `json:"field"`
	// RetryAfter is the server's Retry-After, zero when absent.
	RetryAfter time.Duration
}

// Error renders the answer as "server answered 422 unknown_item: item
// "x" is not in the study's pool (field [0].items[1])".
func (e *Error) Error() string {
	if e.Field != "" {
		return fmt.Sprintf("server answered %d %s: %s (field %s)", e.Status, e.Code, e.Message, e.Field)
	}
	return fmt.Sprintf("server answered %d %s: %s", e.Status, e.Code, e.Message)
}

// Temporary reports whether the request may succeed if retried later.
func (e *Error) Temporary() bool {
	return e.Status == http.StatusServiceUnavailable || e.Status == http.StatusTooManyRequests
}

// Judgment is one response as posted by an experiment page. Set Items and
// Odd for odd-one-out studies, or Head, Close and Far for anchor studies.
type Judgment struct {
	ID      string   `json:"id,omitempty"`
	Worker  string   `json:"worker"`
	Items   []string `json:"items,omitempty"`
	Odd     string   `json:"odd,omitempty"`
	Head    string   `json:"head,omitempty"`
	Close   string   `json:"close,omitempty"`
	Far     string   `json:"far,omitempty"`
	RTMs    int      `json:"rt_ms,omitempty"`
	QueryID string   `json:"query_id,omitempty"`
}

// Accepted is the answer to a judgment post. ReceivedAt is the accept
// time the judgments carry; a teacher whose NewestAcceptedAt is at or
// after it reflects them.
type Accepted struct {
	Accepted   int       `json:"accepted"`
	IDs        []string  `json:"ids"`
	ReceivedAt time.Time `json:"received_at"`
}

// TeacherInfo is part of a study's current teacher as GET
// /v1/studies/{study}/teacher shows it; the times are nil before the
// learner stored any state.
type TeacherInfo struct {
	Study            string     `json:"study"`
	Status           string     `json:"status"`
	Version          int64      `json:"version"`
	UpdatedAt        *time.Time `json:"updated_at"`
	NewestAcceptedAt *time.Time `json:"newest_accepted_at"`
	FreshnessSeconds *float64   `json:"freshness_seconds"`
	JudgmentsSeen    int64      `json:"judgments_seen"`
}

// StudyInfo describes a study.
type StudyInfo struct {
	ID        string `json:"id"`
	Task      string `json:"task"`
	Space     string `json:"space"`
	Items     int64  `json:"items"`
	Judgments int64  `json:"judgments"`
}

func (c *Client) do(ctx context.Context, method, path, contentType string, body io.Reader, out any) error {
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, body)
	if err != nil {
		return fmt.Errorf("build request: %w", err)
	}
	req.Header.Set("Authorization", "Bearer "+c.key)
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 300 {
		return decodeError(resp)
	}
	if out == nil {
		_, _ = io.Copy(io.Discard, resp.Body)
		return nil
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("%s %s: decode response: %w", method, path, err)
	}
	return nil
}

func decodeError(resp *http.Response) error {
	e := &Error{Status: resp.StatusCode}
	var body struct {
		Error *Error `json:"error"`
	}
	raw, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
	if json.Unmarshal(raw, &body) == nil && body.Error != nil {
		e.Code, e.Message, e.Field = body.Error.Code, body.Error.Message, body.Error.Field
	} else {
		e.Message = strings.TrimSpace(string(raw))
	}
	if s, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil {
		e.RetryAfter = time.Duration(s) * time.Second
	}
	return e
}

func (c *Client) doJSON(ctx context.Context, method, path string, in, out any) error {
	b, err := json.Marshal(in)
	if err != nil {
		return fmt.Errorf("encode request: %w", err)
	}
	return c.do(ctx, method, path, "application/json", bytes.NewReader(b), out)
}

// PutSpace creates the representation space name with dimension dim, or
// confirms it exists with that dimension.
func (c *Client) PutSpace(ctx context.Context, name string, dim int) error {
	return c.doJSON(ctx, http.MethodPut, "/v1/spaces/"+url.PathEscape(name), map[string]int{"dim": dim}, nil)
}

// UploadEmbeddings uploads an n×dim float32 matrix for the given item ids as
// a multipart .npy upload, streamed without buffering the whole body.
func (c *Client) UploadEmbeddings(ctx context.Context, space string, ids []string, vectors []float32, dim int) (int64, error) {
	if len(ids)*dim != len(vectors) {
		return 0, fmt.Errorf("upload embeddings: %d ids × dim %d != %d values", len(ids), dim, len(vectors))
	}
	pr, pw := io.Pipe()
	mw := multipart.NewWriter(pw)
	go func() {
		err := func() error {
			idsJSON, err := json.Marshal(ids)
			if err != nil {
				return err
			}
			if err := mw.WriteField("ids", string(idsJSON)); err != nil {
				return err
			}
			part, err := mw.CreateFormFile("vectors", "vectors.npy")
			if err != nil {
				return err
			}
			if err := npy.Write(part, npy.FromFloat32(vectors, len(ids), dim)); err != nil {
				return err
			}
			return mw.Close()
		}()
		pw.CloseWithError(err)
	}()
	var out struct {
		Upserted int64 `json:"upserted"`
	}
	err := c.do(ctx, http.MethodPost, "/v1/spaces/"+url.PathEscape(space)+"/embeddings", mw.FormDataContentType(), pr, &out)
	_ = pr.Close()
	return out.Upserted, err
}

// CreateStudy creates a study, or confirms an identical one exists.
func (c *Client) CreateStudy(ctx context.Context, id, task, space string) error {
	return c.doJSON(ctx, http.MethodPost, "/v1/studies", map[string]string{"id": id, "task": task, "space": space}, nil)
}

// Study returns a study's definition and counts.
func (c *Client) Study(ctx context.Context, id string) (StudyInfo, error) {
	var s StudyInfo
	err := c.do(ctx, http.MethodGet, "/v1/studies/"+url.PathEscape(id), "", nil, &s)
	return s, err
}

// AddItems adds items to a study's pool and returns how many were new.
func (c *Client) AddItems(ctx context.Context, study string, items []string) (int64, error) {
	var out struct {
		Added int64 `json:"added"`
	}
	err := c.doJSON(ctx, http.MethodPost, "/v1/studies/"+url.PathEscape(study)+"/items", map[string][]string{"items": items}, &out)
	return out.Added, err
}

// Teacher returns the study's current teacher state.
func (c *Client) Teacher(ctx context.Context, study string) (TeacherInfo, error) {
	var t TeacherInfo
	err := c.do(ctx, http.MethodGet, "/v1/studies/"+url.PathEscape(study)+"/teacher", "", nil, &t)
	return t, err
}

// PostJudgment posts one judgment. It returns once the server has the
// judgment safely in its log.
func (c *Client) PostJudgment(ctx context.Context, study string, j Judgment) (Accepted, error) {
	var out Accepted
	err := c.doJSON(ctx, http.MethodPost, "/v1/studies/"+url.PathEscape(study)+"/judgments", j, &out)
	return out, err
}

// PostJudgments posts a batch atomically: all are accepted or none.
func (c *Client) PostJudgments(ctx context.Context, study string, js []Judgment) (Accepted, error) {
	var out Accepted
	err := c.doJSON(ctx, http.MethodPost, "/v1/studies/"+url.PathEscape(study)+"/judgments", js, &out)
	return out, err
}

// Export streams a study's judgments in format "csv" or "jsonl" received
// at or after since (zero for all). The caller closes the reader.
func (c *Client) Export(ctx context.Context, study, format string, since time.Time) (io.ReadCloser, error) {
	q := url.Values{"format": {format}}
	if !since.IsZero() {
		q.Set("since", since.Format(time.RFC3339Nano))
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.base+"/v1/studies/"+url.PathEscape(study)+"/judgments?"+q.Encode(), nil)
	if err != nil {
		return nil, fmt.Errorf("build request: %w", err)
	}
	req.Header.Set("Authorization", "Bearer "+c.key)
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("export: %w", err)
	}
	if resp.StatusCode >= 300 {
		defer resp.Body.Close()
		return nil, decodeError(resp)
	}
	return resp.Body, nil
}

// ItemDisplay is how an item is shown to participants; empty fields clear.
type ItemDisplay struct {
	ID       string `json:"id"`
	Label    string `json:"label,omitempty"`
	ImageURL string `json:"image_url,omitempty"`
}

// PutItemDisplays sets the labels and external image URLs of items.
func (c *Client) PutItemDisplays(ctx context.Context, ds []ItemDisplay) error {
	return c.doJSON(ctx, http.MethodPost, "/v1/items", map[string]any{"items": ds}, nil)
}

// PutItemImage uploads an image (JPEG, PNG, WebP or GIF) for item.
func (c *Client) PutItemImage(ctx context.Context, item string, data []byte) error {
	return c.do(ctx, http.MethodPut, "/v1/items/"+url.PathEscape(item)+"/image", "application/octet-stream", bytes.NewReader(data), nil)
}
