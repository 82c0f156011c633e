package client

import (
	"context"
	"net/http"
	"net/url"
)

// PatchStudySettings merges settings into the study's settings, as JSON
// merge patch (RFC 7386) of its "settings" object: for example
// {"trainer": {"triplets": 50000}} changes only that field.
func (c *Client) PatchStudySettings(ctx context.Context, study string, settings any) error {
	return c.doJSON(ctx, http.MethodPatch, "/v1/studies/"+url.PathEscape(study), map[string]any{"settings": settings}, nil)
}

// PutPool sets the study's generation pool, the items the trainer
// generates AligNet data over, from space: items, or every item of the
// space with embeddings when items is empty.
func (c *Client) PutPool(ctx context.Context, study, space string, items []string) error {
	body := map[string]any{"space": space}
	if len(items) > 0 {
		body["items"] = items
	}
	return c.doJSON(ctx, http.MethodPut, "/v1/studies/"+url.PathEscape(study)+"/pool", body, nil)
}

// CreateStudent registers a student of the study on the frozen
// embeddings of space, with the default head settings; the trainer
// distils it from each new dataset.
func (c *Client) CreateStudent(ctx context.Context, study, id, space string) error {
	return c.doJSON(ctx, http.MethodPost, "/v1/studies/"+url.PathEscape(study)+"/students",
		map[string]string{"id": id, "space": space}, nil)
}
