package alignet

import (
	"errors"
	"strings"
	"testing"
)

func TestItemDisplayValidate(t *testing.T) {
	ok := []ItemDisplay{{Item: "a"}, {Item: "a", Label: "ant"}, {Item: "a", ImageURL: "https://x.org/a.png?x=1"}}
	for _, d := range ok {
		if err := d.Validate(); err != nil {
			t.Errorf("%+v: %v", d, err)
		}
	}
	bad := []struct {
		d     ItemDisplay
		field string
	}{
		{ItemDisplay{Item: ""}, "id"},
		{ItemDisplay{Item: "a", Label: "a\tb"}, "label"},
		{ItemDisplay{Item: "a", Label: strings.Repeat("é", MaxLabelLen+1)}, "label"},
		{ItemDisplay{Item: "a", ImageURL: "javascript:alert(1)"}, "image_url"},
		{ItemDisplay{Item: "a", ImageURL: "//x.org/a.png"}, "image_url"},
		{ItemDisplay{Item: "a", ImageURL: "https://x.org/" + strings.Repeat("a", MaxImageURLLen)}, "image_url"},
	}
	for _, c := range bad {
		var fe *FieldError
		if err := c.d.Validate(); !errors.As(err, &fe) || fe.Field != c.field {
			t.Errorf("%+v: %v, want a FieldError naming %s", c.d, err, c.field)
		}
	}
}
