package stream

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
)

func TestTripletsRoundTrip(t *testing.T) {
	t.Parallel()
	c := TripletChunk{Study: "s", Dataset: 3, TeacherVersion: 7, Offset: 10, Total: 12,
		Indices: []int32{1, 2, 3, 4, 5, 6}, Similarities: []float32{3, 2, 1, 0.5, -1, -2}}
	m, err := EncodeTriplets(c)
	if err != nil || string(m.Key) != "s" || len(m.Value) != 48 {
		t.Fatalf("encoded %+v, %v", m, err)
	}
	got, err := DecodeTriplets(m)
	if err != nil || got.Dataset != 3 || got.TeacherVersion != 7 || got.Offset != 10 || got.Total != 12 ||
		!slices.Equal(got.Indices, c.Indices) || !slices.Equal(got.Similarities, c.Similarities) {
		t.Fatalf("decoded %+v, %v", got, err)
	}
	if _, err := EncodeTriplets(TripletChunk{Indices: []int32{1, 2}, Similarities: []float32{1, 2}}); err == nil {
		t.Fatal("a partial triplet was encoded")
	}
	m.Value = m.Value[:47]
	if _, err := DecodeTriplets(m); err == nil {
		t.Fatal("a short value was decoded")
	}
}

// TestTripletWriterPublishes publishes two chunks and reads them back, in
// order, from one partition (the key is the study).
func TestTripletWriterPublishes(t *testing.T) {
	forEachBroker(t, func(t *testing.T, brokers []string) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		topic := uniqueName(t, "triplets")
		w, err := NewTripletWriter(TripletWriterConfig{Brokers: brokers, Topic: topic, Partitions: 3})
		if err != nil {
			t.Fatal(err)
		}
		defer w.Close()
		if err := w.EnsureTopic(ctx); err != nil {
			t.Fatal(err)
		}
		chunks := []TripletChunk{
			{Study: "s", Dataset: 1, Offset: 0, Total: 3, Indices: []int32{0, 1, 2, 3, 4, 5}, Similarities: []float32{1, 0, 0, 1, 0, 0}},
			{Study: "s", Dataset: 1, Offset: 2, Total: 3, Indices: []int32{6, 7, 8}, Similarities: []float32{1, 0, 0}},
		}
		if err := w.Publish(ctx, chunks); err != nil {
			t.Fatal(err)
		}
		var got []TripletChunk
		for p := 0; p < 3 && len(got) < 2; p++ {
			r := kafka.NewReader(kafka.ReaderConfig{Brokers: brokers, Topic: topic, Partition: p, MaxWait: 200 * time.Millisecond})
			rctx, rcancel := context.WithTimeout(ctx, 3*time.Second)
			for len(got) < 2 {
				m, err := r.ReadMessage(rctx)
				if err != nil {
					break
				}
				c, err := DecodeTriplets(m)
				if err != nil {
					t.Fatal(err)
				}
				got = append(got, c)
			}
			rcancel()
			r.Close()
		}
		if len(got) != 2 || got[0].Offset != 0 || got[1].Offset != 2 || !slices.Equal(got[1].Indices, chunks[1].Indices) {
			t.Fatalf("read back %+v", got)
		}
	})
}
