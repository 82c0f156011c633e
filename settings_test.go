package alignet

import (
	"errors"
	"fmt"
	"reflect"
	"testing"
	"time"
)

func TestDecodeStudySettingsDefaults(t *testing.T) {
	for _, raw := range []string{"", "null", "{}", `{"learner":{}}`} {
		s, err := DecodeStudySettings([]byte(raw))
		if err != nil || !reflect.DeepEqual(s, DefaultStudySettings()) {
			t.Errorf("DecodeStudySettings(%q) = %+v, %v; want the defaults", raw, s, err)
		}
	}
}

func TestDecodeStudySettingsNamesTheField(t *testing.T) {
	cases := []struct{ raw, field string }{
		{`{"learner":{"refit_factor":1}}`, "learner.refit_factor"},
		{`{"learner":{"held_out_share":0.9}}`, "learner.held_out_share"},
		{`{"learner":{"lambdas":[0.1,-1]}}`, "learner.lambdas[1]"},
		{`{"learner":{"lambdas":[]}}`, "learner.lambdas"},
		{`{"learner":{"version_interval":"soon"}}`, "learner.version_interval"},
		{`{"learner":{"version_interval":"10ms"}}`, "learner.version_interval"},
		{`{"learner":{"min_judgments":"many"}}`, "learner.min_judgments"},
		{`{"learner":{"refit_facter":2}}`, "learner.refit_facter"},
		{`{"learner":{"Refit_Factor":2,"zzz":1}}`, "learner.zzz"},
		{`{"lerner":{}}`, "lerner"},
	}
	for _, c := range cases {
		_, err := DecodeStudySettings([]byte(c.raw))
		var fe *FieldError
		if !errors.As(err, &fe) || !errors.Is(err, ErrInvalid) {
			t.Errorf("DecodeStudySettings(%s) = %v, want a FieldError", c.raw, err)
			continue
		}
		if fe.Field != c.field {
			t.Errorf("DecodeStudySettings(%s) blames %q, want %q (%v)", c.raw, fe.Field, c.field, err)
		}
	}
}

func TestPatchMergesAndResets(t *testing.T) {
	base := DefaultStudySettings()
	s, err := base.Patch([]byte(`{"learner":{"refit_factor":3,"online":false,"version_interval":"90s"}}`))
	if err != nil {
		t.Fatal(err)
	}
	if s.Learner.RefitFactor != 3 || s.Learner.Online || time.Duration(s.Learner.VersionInterval) != 90*time.Second {
		t.Fatalf("patched = %+v", s.Learner)
	}
	if s.Learner.MinJudgments != base.Learner.MinJudgments || !s.Learner.Refits {
		t.Fatalf("patch changed untouched fields: %+v", s.Learner)
	}
	if base.Learner.RefitFactor != DefaultLearnerSettings().RefitFactor {
		t.Fatal("Patch modified its receiver")
	}
	// null resets a member to its default.
	r, err := s.Patch([]byte(`{"learner":{"refit_factor":null}}`))
	if err != nil || r.Learner.RefitFactor != DefaultLearnerSettings().RefitFactor || r.Learner.Online {
		t.Fatalf("reset = %+v, %v", r.Learner, err)
	}
	for _, bad := range []string{`[]`, `3`, `{"learner":{"refit_factor":0.5}}`, `{`} {
		if _, err := s.Patch([]byte(bad)); !errors.Is(err, ErrInvalid) {
			t.Errorf("Patch(%s) = %v, want ErrInvalid", bad, err)
		}
	}
}

func TestHeldOutShareAndDeterminism(t *testing.T) {
	const n = 100000
	held := 0
	for i := range n {
		id := "j" + time.Duration(i).String()
		a := HeldOut("s1", id, 0.1)
		if a != HeldOut("s1", id, 0.1) {
			t.Fatal("HeldOut is not deterministic")
		}
		if a {
			held++
			if !HeldOut("s1", id, 0.2) {
				t.Fatal("a judgment held out at 10% is not held out at 20%")
			}
		}
	}
	// Binomial(100000, 0.1): sd ≈ 95; 5 sd is a generous bound.
	if held < 10000-475 || held > 10000+475 {
		t.Fatalf("held out %d of %d at share 0.1", held, n)
	}
	// Sequential ids that differ only in their last characters, and
	// client-style ids, are split at the share as well.
	for _, form := range []string{"t%06d", "odd-%d", "%d"} {
		held := 0
		for i := range 20000 {
			if HeldOut("s1", fmt.Sprintf(form, i), 0.1) {
				held++
			}
		}
		// Binomial(20000, 0.1): sd ≈ 42.
		if held < 2000-250 || held > 2000+250 {
			t.Errorf("ids %q: held out %d of 20000 at share 0.1", form, held)
		}
	}
	if HeldOut("s1", "x", 0) {
		t.Fatal("share 0 held a judgment out")
	}
	diff := 0
	for i := range 1000 {
		id := "k" + time.Duration(i).String()
		if HeldOut("s1", id, 0.5) != HeldOut("s2", id, 0.5) {
			diff++
		}
	}
	if diff < 350 {
		t.Fatalf("the split does not depend on the study: %d of 1000 differ", diff)
	}
}

func TestTrainerSettings(t *testing.T) {
	s, err := DecodeStudySettings([]byte(`{"trainer":{"strategies":{"random":1},"triplets":5000,"student":{"loss":"jsd"}}}`))
	if err != nil {
		t.Fatal(err)
	}
	if len(s.Trainer.Strategies) != 1 || s.Trainer.Strategies[StrategyRandom] != 1 || s.Trainer.Triplets != 5000 ||
		s.Trainer.Student.Loss != LossJS || s.Trainer.Student.Epochs != DefaultStudentSettings().Epochs {
		t.Fatalf("decoded %+v", s.Trainer)
	}
	p, err := s.Patch([]byte(`{"trainer":{"strategies":{"cluster_border":0.5,"random":null}}}`))
	if err != nil || len(p.Trainer.Strategies) != 1 || p.Trainer.Strategies[StrategyClusterBorder] != 0.5 {
		t.Fatalf("patched %+v, %v", p.Trainer.Strategies, err)
	}
	for raw, field := range map[string]string{
		`{"trainer":{"strategies":{"nope":1}}}`:            "trainer.strategies.nope",
		`{"trainer":{"strategies":{"random":0}}}`:          "trainer.strategies",
		`{"trainer":{"strategies":{}}}`:                    "trainer.strategies",
		`{"trainer":{"clusters":1}}`:                       "trainer.clusters",
		`{"trainer":{"min_interval":"1ms"}}`:               "trainer.min_interval",
		`{"trainer":{"student":{"loss":"mse"}}}`:           "trainer.student.loss",
		`{"trainer":{"student":{"learning_rate":0}}}`:      "trainer.student.learning_rate",
		`{"trainer":{"keep_datasets":0}}`:                  "trainer.keep_datasets",
		`{"trainer":{"min_teacher_change":-1}}`:            "trainer.min_teacher_change",
		`{"trainer":{"student":{"val_share":0.9}}}`:        "trainer.student.val_share",
		`{"trainer":{"triplets":1000000000000}}`:           "trainer.triplets",
		`{"trainer":{"strategies":{"cluster_border":-1}}}`: "trainer.strategies.cluster_border",
	} {
		_, err := DecodeStudySettings([]byte(raw))
		var fe *FieldError
		if !errors.As(err, &fe) || fe.Field != field {
			t.Errorf("DecodeStudySettings(%s) = %v, want a FieldError on %s", raw, err, field)
		}
	}
}
