package alignet

import (
	"errors"
	"reflect"
	"strconv"
	"testing"
	"time"
)

func TestQuerySettingsNameTheField(t *testing.T) {
	cases := []struct{ raw, field string }{
		{`{"queries":{"mix":{"active":0.5}}}`, "queries.mix"},
		{`{"queries":{"mix":{"active":1.2,"random":-0.2,"repeat":0,"check":0}}}`, "queries.mix.active"},
		{`{"queries":{"mix":{"active":0.5,"random":-0.1,"repeat":0.3,"check":0.3}}}`, "queries.mix.random"},
		{`{"queries":{"scorer":"magic"}}`, "queries.scorer"},
		{`{"queries":{"scorer":"disagreement"}}`, "queries.student"},
		{`{"queries":{"pool_size":0}}`, "queries.pool_size"},
		{`{"queries":{"trials":0}}`, "queries.trials"},
		{`{"queries":{"ttl":"1s"}}`, "queries.ttl"},
		{`{"queries":{"ttl":"later"}}`, "queries.ttl"},
		{`{"queries":{"min_rt_ms":-1}}`, "queries.min_rt_ms"},
		{`{"queries":{"repeats":0}}`, "queries.repeats"},
		{`{"queries":{"discount":0}}`, "queries.discount"},
		{`{"queries":{"check_confidence":0.2}}`, "queries.check_confidence"},
		{`{"queries":{"flags":{"max_failed_checks":0}}}`, "queries.flags.max_failed_checks"},
		{`{"queries":{"flags":{"fast_share":2}}}`, "queries.flags.fast_share"},
		{`{"queries":{"completion":{"redirect":"ftp://x"}}}`, "queries.completion.redirect"},
		{`{"queries":{"completion":{"code":"a\u0001"}}}`, "queries.completion.code"},
		{`{"checks":[{"items":["a","b","c"],"answer":"c"},{"items":["a","b","b"],"answer":"a"}]}`, "checks[1].items[2]"},
		{`{"checks":[{"items":["a","b","c"],"answer":"d"}]}`, "checks[0].answer"},
		{`{"checks":[{"items":["a","","c"],"answer":"a"}]}`, "checks[0].items[1]"},
	}
	for _, c := range cases {
		_, err := DecodeStudySettings([]byte(c.raw))
		var fe *FieldError
		if !errors.As(err, &fe) {
			t.Errorf("DecodeStudySettings(%s) = %v, want a FieldError", c.raw, err)
			continue
		}
		if fe.Field != c.field {
			t.Errorf("DecodeStudySettings(%s) blames %q, want %q (%v)", c.raw, fe.Field, c.field, err)
		}
	}
}

func TestQuerySettingsPatchAndDefaults(t *testing.T) {
	s, err := DefaultStudySettings().Patch([]byte(`{"queries":{"mix":{"active":0.5,"random":0.5,"repeat":0,"check":0},"repeats":0,"trials":20,
		"completion":{"code":"C0DE","redirect":"https://lab.example/done?c={code}&s={session}"}},
		"checks":[{"items":["a","b","c"],"answer":"b"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	if s.Queries.Mix.Random != 0.5 || s.Queries.Trials != 20 || s.Queries.Completion.Code != "C0DE" ||
		len(s.Checks) != 1 || s.Checks[0].Answer != "b" {
		t.Fatalf("patched = %+v", s.Queries)
	}
	if s.Queries.Scorer != DefaultScorer || time.Duration(s.Queries.TTL) != 30*time.Minute || s.Queries.PoolSize != 100000 {
		t.Fatalf("patch changed untouched fields: %+v", s.Queries)
	}
	r, err := s.Patch([]byte(`{"queries":null,"checks":null}`))
	if err != nil || !reflect.DeepEqual(r.Queries, DefaultQuerySettings()) || len(r.Checks) != 0 {
		t.Fatalf("reset = %+v, %v", r.Queries, err)
	}
}

func TestFlagReasons(t *testing.T) {
	f := DefaultQuerySettings().Flags
	cases := []struct {
		w    WorkerFlags
		want []string
	}{
		{WorkerFlags{Trials: 50, ChecksFailed: 1}, nil},
		{WorkerFlags{Trials: 50, ChecksFailed: 2}, []string{FlagFailedChecks}},
		{WorkerFlags{Trials: 9, Fast: 9}, nil},  // too few trials for the RT rule
		{WorkerFlags{Trials: 10, Fast: 5}, nil}, // half is not most
		{WorkerFlags{Trials: 10, Fast: 6}, []string{FlagFastResponses}},
		{WorkerFlags{Trials: 40, Fast: 30, ChecksFailed: 3}, []string{FlagFailedChecks, FlagFastResponses}},
	}
	for _, c := range cases {
		if got := f.Reasons(c.w); !reflect.DeepEqual(got, c.want) {
			t.Errorf("Reasons(%+v) = %v, want %v", c.w, got, c.want)
		}
	}
}

// TestTrainingRole asserts the rule at its boundary: whatever else holds,
// a flagged worker's judgment and an attention check never get a training
// role, and random queries are the held-out set exactly when the mix asks
// them.
func TestTrainingRole(t *testing.T) {
	withRandom := DefaultStudySettings()
	noRandom := DefaultStudySettings()
	noRandom.Queries.Mix = QueryMix{Active: 0.9, Repeat: 0.05, Check: 0.05}
	kinds := []QueryKind{"", QueryActive, QueryRandom, QueryRepeat, QueryCheck}
	counts := map[string]int{}
	for i := range 20000 {
		j := Judgment{ID: "j" + strconv.Itoa(i), Study: "s", QueryKind: kinds[i%len(kinds)]}
		if j.QueryKind != "" {
			j.QueryID = "q" + strconv.Itoa(i)
		}
		for _, s := range []StudySettings{withRandom, noRandom} {
			if r := TrainingRole(j, s, true); r != RoleExcluded {
				t.Fatalf("flagged worker's %+v got role %s", j, r)
			}
			r := TrainingRole(j, s, false)
			switch {
			case j.QueryKind == QueryCheck:
				if r != RoleExcluded {
					t.Fatalf("check %+v got role %s", j, r)
				}
			case s.Queries.Mix.Random > 0 && j.QueryKind == QueryRandom:
				if r != RoleHeldOut {
					t.Fatalf("random query %+v got role %s", j, r)
				}
			case s.Queries.Mix.Random > 0 && j.QueryKind != "":
				if r != RoleTrain {
					t.Fatalf("%s query %+v got role %s in a study with random queries", j.QueryKind, j, r)
				}
			default:
				want := RoleTrain
				if HeldOut(j.Study, j.ID, s.Learner.HeldOutShare) {
					want = RoleHeldOut
				}
				if r != want {
					t.Fatalf("%+v got role %s, want the hash split's %s", j, r, want)
				}
				counts[string(r)]++
			}
		}
	}
	// The hash split holds out about its share of the rest.
	if total := counts["train"] + counts["held_out"]; counts["held_out"] < total/20 || counts["held_out"] > total/6 {
		t.Fatalf("hash split held out %d of %d", counts["held_out"], total)
	}
}

func TestJudgmentQueryKind(t *testing.T) {
	j := Judgment{ID: "j", Study: "s", Task: TaskOddOneOut, Worker: "w", Items: [3]string{"a", "b", "c"}, Odd: "a",
		ReceivedAt: time.Now(), QueryID: "q", QueryKind: QueryRepeat}
	if err := j.Validate(); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []Judgment{
		func() Judgment { c := j; c.QueryKind = "sneaky"; return c }(),
		func() Judgment { c := j; c.QueryID = ""; return c }(),
	} {
		var fe *FieldError
		if err := bad.Validate(); !errors.As(err, &fe) || fe.Field != "query_kind" {
			t.Errorf("Validate(%+v) = %v, want a query_kind error", bad, err)
		}
	}
}
