package alignet

import (
	"net/url"
	"time"
)

// Limits on item display data.
const (
	// MaxLabelLen bounds an item's text label, in characters.
	MaxLabelLen = 200
	// MaxImageURLLen bounds an item's external image URL, in bytes.
	MaxImageURLLen = 2048
)

// imageTypes are the content types an uploaded item image may have.
var imageTypes = [...]string{"image/jpeg", "image/png", "image/webp", "image/gif"}

// ValidImageType reports whether ct is a content type an uploaded item
// image may have: image/jpeg, image/png, image/webp or image/gif.
func ValidImageType(ct string) bool {
	for _, t := range imageTypes {
		if ct == t {
			return true
		}
	}
	return false
}

// ItemDisplay is how an item is shown to participants: a text label, an
// external image URL, an uploaded image, or several of them (pages show
// the uploaded image first, then the external one, then the label).
//
// Display data belong to the item id globally: an id names one stimulus in
// every space and study it appears in, so a picture uploaded once serves
// every study over that item. Data sets whose ids could collide (two sets
// numbered from 0) should prefix their ids, as "alignet import zappos"
// does ("zappos-17").
type ItemDisplay struct {
	// Item is the item id.
	Item string
	// Label is the text shown for the item, or under its image; empty
	// means none.
	Label string
	// ImageURL is an absolute http(s) URL of a picture of the item hosted
	// elsewhere; empty means none.
	ImageURL string
	// Image describes the uploaded image, nil when none was uploaded.
	Image *ItemImage
	// UpdatedAt is when the label or image URL last changed; writing
	// display data ignores it.
	UpdatedAt time.Time
}

// Validate checks the label and image URL of d and returns a *FieldError
// naming "label" or "image_url".
func (d *ItemDisplay) Validate() error {
	if !ValidItemID(d.Item) {
		return Invalid("id", "item ids are 1-%d characters of text without control characters", MaxItemIDLen)
	}
	if msg := CheckText(d.Label, MaxLabelLen); msg != "" {
		return Invalid("label", "label %s", msg)
	}
	if d.ImageURL != "" {
		if len(d.ImageURL) > MaxImageURLLen {
			return Invalid("image_url", "image_url must be at most %d bytes", MaxImageURLLen)
		}
		u, err := url.Parse(d.ImageURL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || CheckText(d.ImageURL, MaxImageURLLen) != "" {
			return Invalid("image_url", "image_url must be an absolute http or https URL")
		}
	}
	return nil
}

// ItemImage describes an image uploaded for an item; the bytes are stored
// beside it.
type ItemImage struct {
	// ContentType is one of the types ValidImageType accepts, as sniffed
	// from the bytes.
	ContentType string
	// Size is the image's length in bytes.
	Size int64
	// SHA256 is the hex SHA-256 of the bytes; it versions the image in
	// URLs and ETags.
	SHA256 string
	// UpdatedAt is when the image was uploaded; storing an image ignores it.
	UpdatedAt time.Time
}
