package client

import (
	"context"
	"net/http"
	"net/url"
	"strconv"
)

// Session is a participant session as the server reports it.
type Session struct {
	ID         string      `json:"id"`
	Study      string      `json:"study"`
	Platform   string      `json:"platform"`
	Trials     int         `json:"trials"`
	Answered   int         `json:"answered"`
	Complete   bool        `json:"complete"`
	Completion *Completion `json:"completion,omitempty"`
}

// Completion says where a participant goes once their session is complete.
type Completion struct {
	Code     string `json:"code"`
	Redirect string `json:"redirect"`
}

// Query is one query to show; answer it with a Judgment carrying its
// QueryID and Items.
type Query struct {
	QueryID string    `json:"query_id"`
	Items   [3]string `json:"items"`
}

// Next is the answer to a next-queries request.
type Next struct {
	Queries    []Query     `json:"queries"`
	Complete   bool        `json:"complete"`
	Completion *Completion `json:"completion,omitempty"`
}

// OpenSession opens a participant session for the raw worker id on the
// platform ("prolific", "mturk" or "generic") with the platform's
// parameters, or returns the worker's open one.
func (c *Client) OpenSession(ctx context.Context, study, worker, platform string, params map[string]string) (Session, error) {
	var s Session
	body := map[string]any{"worker": worker, "platform": platform}
	if len(params) > 0 {
		body["params"] = params
	}
	err := c.doJSON(ctx, http.MethodPost, "/v1/studies/"+url.PathEscape(study)+"/sessions", body, &s)
	return s, err
}

// Next returns up to n queries of the session: its open ones first.
func (c *Client) Next(ctx context.Context, study, session string, n int) (Next, error) {
	var out Next
	err := c.do(ctx, http.MethodGet, "/v1/studies/"+url.PathEscape(study)+"/sessions/"+url.PathEscape(session)+
		"/next?n="+strconv.Itoa(n), "", nil, &out)
	return out, err
}
