package alignet

import (
	"errors"
	"reflect"
	"strings"
	"testing"
)

func TestPageSettings(t *testing.T) {
	s, err := DecodeStudySettings([]byte(`{"page":{"title":"Shoes","consent":"Line one.\n\nLine two.\tTabbed.","instructions":"Pick."}}`))
	if err != nil || s.Page.Title != "Shoes" || s.Page.Consent != "Line one.\n\nLine two.\tTabbed." || s.Page.Instructions != "Pick." {
		t.Fatalf("DecodeStudySettings = %+v, %v", s.Page, err)
	}
	if !reflect.DeepEqual(s.Learner, DefaultLearnerSettings()) {
		t.Fatal("setting page texts changed the learner settings")
	}
	cases := []struct{ raw, field string }{
		{`{"page":{"title":"a\nb"}}`, "page.title"},
		{`{"page":{"consent":"a\u0000b"}}`, "page.consent"},
		{`{"page":{"instructions":"a\u001bb"}}`, "page.instructions"},
		{`{"page":{"title":"` + strings.Repeat("x", MaxPageTitleLen+1) + `"}}`, "page.title"},
		{`{"page":{"colour":"red"}}`, "page.colour"},
	}
	for _, c := range cases {
		_, err := DecodeStudySettings([]byte(c.raw))
		var fe *FieldError
		if !errors.As(err, &fe) || fe.Field != c.field {
			t.Errorf("DecodeStudySettings(%.60s) = %v, want a FieldError naming %s", c.raw, err, c.field)
		}
	}
}
