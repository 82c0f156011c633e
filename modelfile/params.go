package modelfile

import (
	"github.com/alignet/alignet"
	"github.com/alignet/alignet/learner"
)

// TeacherOf converts a teacher's stored float32 parameters (as Postgres
// holds them) to a learner teacher.
func TeacherOf(p alignet.TeacherParams) *learner.Teacher {
	t := &learner.Teacher{D: p.D, P: p.P, Mean: p.Mean, Std: p.Std, Tau: p.Tau, Lambda: p.Lambda,
		Task: learner.Task(p.Task), W: make([]float64, len(p.W)), B: make([]float64, len(p.B))}
	for i, v := range p.W {
		t.W[i] = float64(v)
	}
	for i, v := range p.B {
		t.B[i] = float64(v)
	}
	return t
}

// ParamsOf converts a teacher to its stored float32 parameters.
func ParamsOf(t *learner.Teacher, task alignet.Task) alignet.TeacherParams {
	p := alignet.TeacherParams{Task: task, D: t.D, P: t.P, Mean: t.Mean, Std: t.Std, Tau: t.Tau, Lambda: t.Lambda,
		W: make([]float32, len(t.W)), B: make([]float32, len(t.B))}
	for i, v := range t.W {
		p.W[i] = float32(v)
	}
	for i, v := range t.B {
		p.B[i] = float32(v)
	}
	return p
}
