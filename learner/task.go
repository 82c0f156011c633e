package learner

import "fmt"

// Task is the kind of judgment a model is fitted to and scored on. Its
// values are those of alignet.Task, so learner.Task(study.Task) converts.
type Task string

const (
	// TaskOddOneOut is the three-alternative odd-one-out task.
	TaskOddOneOut Task = "odd-one-out"
	// TaskAnchor is the two-alternative anchor task (head, close, far).
	TaskAnchor Task = "anchor"
)

// Valid returns nil for TaskOddOneOut and TaskAnchor and otherwise an error
// naming the value. It is the one place that knows the tasks: functions
// that return errors reject an invalid task with it, and the others panic
// with it, so a misspelt task is never scored as another one.
func (t Task) Valid() error {
	switch t {
	case TaskOddOneOut, TaskAnchor:
		return nil
	}
	return fmt.Errorf("unknown task %q (want %q or %q)", string(t), TaskOddOneOut, TaskAnchor)
}

// check panics when t is not Valid: scoring with an unknown task is a
// programming error.
func (t Task) check() {
	if err := t.Valid(); err != nil {
		panic("learner: " + err.Error())
	}
}

// isAnchor reports whether t is TaskAnchor, and panics like check when t is
// not Valid.
func (t Task) isAnchor() bool {
	t.check()
	return t == TaskAnchor
}
