package alignet

import (
	"fmt"
	"unicode/utf8"
)

// Limits on the texts of PageSettings.
const (
	// MaxPageTitleLen bounds PageSettings.Title, in characters.
	MaxPageTitleLen = 200
	// MaxPageTextLen bounds PageSettings.Consent and Instructions, in
	// characters.
	MaxPageTextLen = 20000
)

// PageSettings are the texts of the built-in participant page (the "page"
// group of StudySettings). They are plain text: pages show them as text,
// never as HTML, and a blank line starts a new paragraph.
type PageSettings struct {
	// Title heads every screen of the page. Default "" (the page shows
	// "Study").
	Title string `json:"title"`
	// Consent is shown before anything else, with an "I agree" button;
	// empty skips the consent step. Default "".
	Consent string `json:"consent"`
	// Instructions are shown after consent, before the first trial; empty
	// means the task's built-in one-line instruction. Default "".
	Instructions string `json:"instructions"`
}

// DefaultPageSettings returns the page settings of a study that sets
// nothing.
func DefaultPageSettings() PageSettings { return PageSettings{} }

func (p *PageSettings) validate() *FieldError {
	if msg := checkPageText(p.Title, MaxPageTitleLen, false); msg != "" {
		return Invalid("title", "title %s", msg)
	}
	if msg := checkPageText(p.Consent, MaxPageTextLen, true); msg != "" {
		return Invalid("consent", "consent %s", msg)
	}
	if msg := checkPageText(p.Instructions, MaxPageTextLen, true); msg != "" {
		return Invalid("instructions", "instructions %s", msg)
	}
	return nil
}

// checkPageText is CheckText that also allows line breaks and tabs when
// multiline is set.
func checkPageText(s string, max int, multiline bool) string {
	if !utf8.ValidString(s) {
		return "must be valid UTF-8"
	}
	n := 0
	for _, r := range s {
		if multiline && (r == '\n' || r == '\r' || r == '\t') {
			n++
			continue
		}
		if r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) {
			return fmt.Sprintf("must not contain control characters (found U+%04X)", r)
		}
		n++
	}
	if n > max {
		return fmt.Sprintf("must be at most %d characters", max)
	}
	return ""
}
