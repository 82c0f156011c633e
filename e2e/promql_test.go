package e2e

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"unicode"
)

// This file takes PromQL expressions apart just enough to check them
// against a real Prometheus (prometheus_test.go): it finds their vector
// selectors and grouping labels, and splits alert expressions at their
// top-level comparisons. Prometheus itself parses every expression too,
// so a syntax error fails there.

// token is one lexical token of a PromQL expression.
type token struct {
	kind       tokenKind
	text       string
	start, end int // byte offsets in the expression
}

type tokenKind int

const (
	tokIdent tokenKind = iota
	tokNumber
	tokString
	tokPunct // ( ) { } [ ] ,
	tokOp    // operators and matcher operators
)

// lexPromQL splits expr into tokens.
func lexPromQL(expr string) ([]token, error) {
	var toks []token
	for i := 0; i < len(expr); {
		c := expr[i]
		switch {
		case c == ' ' || c == '\t' || c == '\n' || c == '\r':
			i++
		case c == '#':
			for i < len(expr) && expr[i] != '\n' {
				i++
			}
		case c == '"' || c == '\'' || c == '`':
			j := i + 1
			for j < len(expr) && expr[j] != c {
				if expr[j] == '\\' && c != '`' {
					j++
				}
				j++
			}
			if j >= len(expr) {
				return nil, fmt.Errorf("unterminated string at %d", i)
			}
			toks = append(toks, token{tokString, expr[i : j+1], i, j + 1})
			i = j + 1
		case c >= '0' && c <= '9' || c == '.' && i+1 < len(expr) && expr[i+1] >= '0' && expr[i+1] <= '9':
			// Numbers and durations (5m, 1h30m, 1e-3, 0x1f).
			j := i
			for j < len(expr) && (isIdentByte(expr[j]) || expr[j] == '.' ||
				(expr[j] == '-' || expr[j] == '+') && (expr[j-1] == 'e' || expr[j-1] == 'E')) {
				j++
			}
			toks = append(toks, token{tokNumber, expr[i:j], i, j})
			i = j
		case isIdentByte(c) || c == ':':
			j := i
			for j < len(expr) && (isIdentByte(expr[j]) || expr[j] == ':') {
				j++
			}
			toks = append(toks, token{tokIdent, expr[i:j], i, j})
			i = j
		case strings.ContainsRune("(){}[],", rune(c)):
			toks = append(toks, token{tokPunct, string(c), i, i + 1})
			i++
		default:
			n := 1
			if i+1 < len(expr) {
				switch expr[i : i+2] {
				case "==", "!=", "<=", ">=", "=~", "!~":
					n = 2
				}
			}
			if !strings.ContainsRune("=!<>+-*/%^@", rune(c)) {
				return nil, fmt.Errorf("unexpected %q at %d", c, i)
			}
			toks = append(toks, token{tokOp, expr[i : i+n], i, i + n})
			i += n
		}
	}
	return toks, nil
}

func isIdentByte(c byte) bool {
	return c == '_' || c < 0x80 && (unicode.IsLetter(rune(c)) || unicode.IsDigit(rune(c)))
}

// PromQL words that are not metric names.
var (
	aggregations = []string{"sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values",
		"bottomk", "topk", "quantile", "limitk", "limit_ratio"}
	groupingWords = []string{"by", "without", "on", "ignoring", "group_left", "group_right"}
	operatorWords = []string{"and", "or", "unless", "bool", "offset", "atan2"}
	comparisons   = []string{"==", "!=", "<", ">", "<=", ">="}
)

// matcher is one label matcher of a selector.
type matcher struct {
	label, op, value string // value keeps its quotes
}

// selector is one vector selector of an expression, without its range.
type selector struct {
	metric   string
	matchers []matcher
}

// String renders s as an instant vector selector.
func (s selector) String() string {
	if len(s.matchers) == 0 {
		return s.metric
	}
	parts := make([]string, len(s.matchers))
	for i, m := range s.matchers {
		parts[i] = m.label + m.op + m.value
	}
	return s.metric + "{" + strings.Join(parts, ", ") + "}"
}

// with returns s with one more matcher.
func (s selector) with(label, op, value string) selector {
	return selector{metric: s.metric, matchers: append(slices.Clone(s.matchers), matcher{label, op, value})}
}

// exprParts are the selectors and grouping labels of an expression.
type exprParts struct {
	selectors []selector
	labels    []string // of by, without, on, ignoring, group_left and group_right
}

// analysePromQL finds the vector selectors and grouping labels of expr.
func analysePromQL(expr string) (exprParts, error) {
	toks, err := lexPromQL(expr)
	if err != nil {
		return exprParts{}, err
	}
	var out exprParts
	next := func(i int) token {
		if i+1 < len(toks) {
			return toks[i+1]
		}
		return token{}
	}
	for i := 0; i < len(toks); i++ {
		t := toks[i]
		switch {
		case t.kind == tokPunct && t.text == "[": // a range or subquery: skip it
			for i < len(toks) && toks[i].text != "]" {
				i++
			}
		case t.kind == tokIdent && slices.Contains(groupingWords, strings.ToLower(t.text)):
			if next(i).text != "(" {
				continue // group_left without labels
			}
			for i += 2; i < len(toks) && toks[i].text != ")"; i++ {
				if toks[i].kind == tokIdent {
					out.labels = append(out.labels, toks[i].text)
				}
			}
		case t.kind == tokIdent && (slices.Contains(operatorWords, strings.ToLower(t.text)) ||
			slices.Contains(aggregations, strings.ToLower(t.text)) || next(i).text == "(" ||
			strings.EqualFold(t.text, "inf") || strings.EqualFold(t.text, "nan")):
			// A keyword, an aggregation or a function call.
		case t.kind == tokIdent || t.kind == tokPunct && t.text == "{":
			s := selector{}
			if t.kind == tokIdent {
				s.metric = t.text
				if next(i).text != "{" {
					out.selectors = append(out.selectors, s)
					continue
				}
				i++
			}
			// Matchers: label op "value" [, ...] }.
			for i++; i < len(toks) && toks[i].text != "}"; i++ {
				if toks[i].text == "," {
					continue
				}
				if i+2 >= len(toks) || toks[i].kind != tokIdent || toks[i+1].kind != tokOp || toks[i+2].kind != tokString {
					return exprParts{}, fmt.Errorf("cannot read the matchers of %s at %d", s.metric, toks[i].start)
				}
				s.matchers = append(s.matchers, matcher{toks[i].text, toks[i+1].text, toks[i+2].text})
				i += 2
			}
			out.selectors = append(out.selectors, s)
		}
	}
	return out, nil
}

// alertSides splits an alert expression into what must return series for
// the alert to be able to fire: its operands at the top-level set
// operators (and, or, unless), each split at its top-level comparison;
// number literals (the thresholds) are dropped.
func alertSides(expr string) ([]string, error) {
	toks, err := lexPromQL(expr)
	if err != nil {
		return nil, err
	}
	var sides []string
	depth, start := 0, 0
	cut := func(end, next int) { // expr[start:end] is a side; the next starts at next
		part := strings.TrimSpace(expr[start:end])
		if pt, err := lexPromQL(part); err == nil && len(pt) > 0 && !(len(pt) == 1 && pt[0].kind == tokNumber) &&
			!(len(pt) == 2 && pt[0].text == "-" && pt[1].kind == tokNumber) {
			sides = append(sides, part)
		}
		start = next
	}
	for i := 0; i < len(toks); i++ {
		t := toks[i]
		switch {
		case t.kind == tokPunct && strings.Contains("([{", t.text):
			depth++
		case t.kind == tokPunct && strings.Contains(")]}", t.text):
			depth--
		case depth == 0 && (t.kind == tokOp && slices.Contains(comparisons, t.text) ||
			t.kind == tokIdent && slices.Contains([]string{"and", "or", "unless"}, strings.ToLower(t.text))):
			// Skip the operator's modifiers: bool, on(...), ignoring(...), group_left(...).
			j := i + 1
			for j < len(toks) && toks[j].kind == tokIdent && (strings.EqualFold(toks[j].text, "bool") ||
				slices.Contains(groupingWords, strings.ToLower(toks[j].text))) {
				j++
				if j < len(toks) && toks[j].text == "(" {
					for j < len(toks) && toks[j].text != ")" {
						j++
					}
					j++
				}
			}
			next := len(expr)
			if j < len(toks) {
				next = toks[j].start
			}
			cut(t.start, next)
			i = j - 1
		}
	}
	cut(len(expr), len(expr))
	return sides, nil
}

func TestAnalysePromQL(t *testing.T) {
	got, err := analysePromQL(`histogram_quantile(0.99, sum by (le, route) (rate(alignet_http_request_duration_seconds_bucket{route="/v1/studies/:study/predict", method!~"GET|HEAD"}[5m])))
		/ on(instance) group_left(study) max without (job) (alignet_teacher_cache_age_seconds offset 5m) > bool 2 and up{job="alignet"} or vector(0) + time() # comment`)
	if err != nil {
		t.Fatal(err)
	}
	var sels []string
	for _, s := range got.selectors {
		sels = append(sels, s.String())
	}
	want := []string{
		`alignet_http_request_duration_seconds_bucket{route="/v1/studies/:study/predict", method!~"GET|HEAD"}`,
		`alignet_teacher_cache_age_seconds`,
		`up{job="alignet"}`,
	}
	if !slices.Equal(sels, want) {
		t.Errorf("selectors\n%q\nwant\n%q", sels, want)
	}
	if wantLabels := []string{"le", "route", "instance", "study", "job"}; !slices.Equal(got.labels, wantLabels) {
		t.Errorf("labels %q, want %q", got.labels, wantLabels)
	}
	if _, err := analysePromQL(`x{a="b}`); err == nil {
		t.Error("unterminated string accepted")
	}
}

func TestAlertSides(t *testing.T) {
	for expr, want := range map[string][]string{
		`sum(rate(a{s=~"5.."}[5m])) / sum(rate(a[5m])) > 0.01`:                    {`sum(rate(a{s=~"5.."}[5m])) / sum(rate(a[5m]))`},
		"sum by (topic) (lag) > 1000\n  and sum by (topic) (deriv(lag[10m])) > 0": {"sum by (topic) (lag)", "sum by (topic) (deriv(lag[10m]))"},
		`up{job="alignet"} == 0`: {`up{job="alignet"}`},
		`max by (study) (acc) < on(study) group_left max by (study) (held) - 0.05`: {"max by (study) (acc)", "max by (study) (held) - 0.05"},
		`-1 > bool x`: {"x"},
		`x`:           {"x"},
	} {
		got, err := alertSides(expr)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(got, want) {
			t.Errorf("alertSides(%q) = %q, want %q", expr, got, want)
		}
	}
}
