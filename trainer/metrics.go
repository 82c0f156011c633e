package trainer

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/alignet/alignet/ops"
)

// metrics are the trainer's Prometheus metrics:
//
//	alignet_trainer_regenerations_total{result}        ok, error, locked
//	alignet_trainer_regeneration_duration_seconds       whole regenerations
//	alignet_trainer_stage_duration_seconds{stage}       load, transform, cluster, sample, store, publish, students
//	alignet_trainer_dataset_triplets{study}             size of the newest dataset
//	alignet_trainer_dataset_bytes{study}                its .npz size
//	alignet_trainer_published_triplets_total            triplets published to the topic
//	alignet_student_versions_total{study,student,promoted}
//	alignet_student_train_errors_total                 failed student trainings (retried at the next pass)
//	alignet_student_accuracy{study,student}             held-out human accuracy of the current version
//	alignet_student_teacher_agreement{study,student}    dataset validation agreement of the current version
//	alignet_student_refresh_seconds{study,student}      teacher version stored → student version stored
//	alignet_student_train_triplets_per_second           fine-tuning throughput of the last training
type metrics struct {
	regenerations *prometheus.CounterVec
	regenDuration prometheus.Histogram
	stage         *prometheus.HistogramVec
	triplets      *prometheus.GaugeVec
	bytes         *prometheus.GaugeVec
	published     prometheus.Counter
	versions      *prometheus.CounterVec
	trainErrors   prometheus.Counter
	accuracy      *prometheus.GaugeVec
	agreement     *prometheus.GaugeVec
	refresh       *prometheus.GaugeVec
	throughput    prometheus.Gauge
}

func newMetrics(r prometheus.Registerer) (*metrics, error) {
	secs := []float64{.1, .5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600}
	m := &metrics{
		regenerations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "alignet_trainer_regenerations_total",
			Help: "AligNet regenerations by result: ok, error, or locked (another trainer holds the study).",
		}, []string{"result"}),
		regenDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "alignet_trainer_regeneration_duration_seconds", Help: "Duration of whole regenerations, students excluded.", Buckets: secs,
		}),
		stage: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "alignet_trainer_stage_duration_seconds", Help: "Duration of each regeneration stage.", Buckets: secs,
		}, []string{"stage"}),
		triplets: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "alignet_trainer_dataset_triplets", Help: "Triplets of the newest dataset of each study.",
		}, []string{"study"}),
		bytes: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "alignet_trainer_dataset_bytes", Help: "Size of the newest dataset's .npz of each study.",
		}, []string{"study"}),
		published: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "alignet_trainer_published_triplets_total", Help: "Triplets published to the triplets topic.",
		}),
		versions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "alignet_student_versions_total", Help: "Student versions stored, by whether they were promoted.",
		}, []string{"study", "student", "promoted"}),
		trainErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "alignet_student_train_errors_total", Help: "Student trainings that failed; each is retried at the next pass.",
		}),
		accuracy: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "alignet_student_accuracy", Help: "Held-out human accuracy of each student's current version.",
		}, []string{"study", "student"}),
		agreement: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "alignet_student_teacher_agreement", Help: "Agreement with the teacher on the dataset's validation triplets of each student's newest version.",
		}, []string{"study", "student"}),
		refresh: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "alignet_student_refresh_seconds", Help: "Time from a teacher version being stored to the student version trained on its data.",
		}, []string{"study", "student"}),
		throughput: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "alignet_student_train_triplets_per_second", Help: "Fine-tuning throughput of the last student training.",
		}),
	}
	// Every result exists from the start, so that an alert on the rate of
	// errors sees the first one.
	for _, r := range []string{"ok", "error", "locked"} {
		m.regenerations.WithLabelValues(r)
	}
	var err error
	reg := func(c prometheus.Collector) {
		if err == nil {
			_, err = ops.Register(r, c)
		}
	}
	for _, c := range []prometheus.Collector{m.regenerations, m.regenDuration, m.stage, m.triplets, m.bytes, m.published,
		m.versions, m.trainErrors, m.accuracy, m.agreement, m.refresh, m.throughput} {
		reg(c)
	}
	return m, err
}
