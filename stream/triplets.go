package stream

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"strconv"
	"time"

	"github.com/segmentio/kafka-go"
)

// DefaultTripletsTopic is the topic the trainer publishes AligNet triplets
// to, keyed by study.
const DefaultTripletsTopic = "alignet.triplets"

// TripletsFormat is the value of the alignet-format header of triplet
// messages.
const TripletsFormat = "alignet-triplets-v1"

// Headers of a triplet message. Every value is a decimal integer, except
// alignet-study and alignet-format.
const (
	HeaderStudy          = "alignet-study"
	HeaderDataset        = "alignet-dataset"
	HeaderTeacherVersion = "alignet-teacher-version"
	HeaderOffset         = "alignet-offset"
	HeaderCount          = "alignet-count"
	HeaderTotal          = "alignet-total"
	HeaderFormat         = "alignet-format"
)

// TripletChunk is one message of the triplets topic: Count triplets of
// dataset Dataset of Study, starting at triplet Offset of its Total.
//
// On the wire the key is the study id, the headers carry the fields above
// as text, and the value is Count×3 little-endian int32 indices into the
// study's generation pool (odd one out last, as in the dataset's
// "indices") followed by Count×3 little-endian float32 similarities
// (s01, s02, s12, as in "similarities"): 24 bytes per triplet. A dataset
// is complete once messages covering [0, Total) arrived; the dataset's
// .npz download names the indices' items ("filenames").
type TripletChunk struct {
	Study          string
	Dataset        int64
	TeacherVersion int64
	Offset, Total  int64
	Indices        []int32
	Similarities   []float32
}

// EncodeTriplets renders c as a Kafka message.
func EncodeTriplets(c TripletChunk) (kafka.Message, error) {
	if len(c.Indices)%3 != 0 || len(c.Indices) != len(c.Similarities) {
		return kafka.Message{}, fmt.Errorf("encode triplets: %d indices and %d similarities", len(c.Indices), len(c.Similarities))
	}
	n := len(c.Indices)
	v := make([]byte, 8*n)
	for i, x := range c.Indices {
		binary.LittleEndian.PutUint32(v[4*i:], uint32(x))
	}
	for i, x := range c.Similarities {
		binary.LittleEndian.PutUint32(v[4*n+4*i:], math.Float32bits(x))
	}
	itoa := func(x int64) []byte { return []byte(strconv.FormatInt(x, 10)) }
	return kafka.Message{
		Key:   []byte(c.Study),
		Value: v,
		Headers: []kafka.Header{
			{Key: HeaderFormat, Value: []byte(TripletsFormat)},
			{Key: HeaderStudy, Value: []byte(c.Study)},
			{Key: HeaderDataset, Value: itoa(c.Dataset)},
			{Key: HeaderTeacherVersion, Value: itoa(c.TeacherVersion)},
			{Key: HeaderOffset, Value: itoa(c.Offset)},
			{Key: HeaderCount, Value: itoa(int64(n / 3))},
			{Key: HeaderTotal, Value: itoa(c.Total)},
		},
	}, nil
}

// DecodeTriplets parses a message written by EncodeTriplets.
func DecodeTriplets(m kafka.Message) (TripletChunk, error) {
	h := map[string]string{}
	for _, x := range m.Headers {
		h[x.Key] = string(x.Value)
	}
	if h[HeaderFormat] != TripletsFormat {
		return TripletChunk{}, fmt.Errorf("decode triplets: format %q, want %q", h[HeaderFormat], TripletsFormat)
	}
	c := TripletChunk{Study: h[HeaderStudy]}
	var count int64
	for name, dst := range map[string]*int64{HeaderDataset: &c.Dataset, HeaderTeacherVersion: &c.TeacherVersion,
		HeaderOffset: &c.Offset, HeaderCount: &count, HeaderTotal: &c.Total} {
		v, err := strconv.ParseInt(h[name], 10, 64)
		if err != nil {
			return TripletChunk{}, fmt.Errorf("decode triplets: header %s: %w", name, err)
		}
		*dst = v
	}
	if int64(len(m.Value)) != 24*count {
		return TripletChunk{}, fmt.Errorf("decode triplets: %d bytes for %d triplets", len(m.Value), count)
	}
	n := int(3 * count)
	c.Indices = make([]int32, n)
	c.Similarities = make([]float32, n)
	for i := range c.Indices {
		c.Indices[i] = int32(binary.LittleEndian.Uint32(m.Value[4*i:]))
		c.Similarities[i] = math.Float32frombits(binary.LittleEndian.Uint32(m.Value[4*n+4*i:]))
	}
	return c, nil
}

// TripletWriterConfig configures NewTripletWriter.
type TripletWriterConfig struct {
	// Brokers are the bootstrap brokers. Required.
	Brokers []string
	// Topic is the triplets topic. Default DefaultTripletsTopic.
	Topic string
	// Partitions is used when the topic is created. Default 6.
	Partitions int
	// WriteTimeout bounds each batch write. Default 30s.
	WriteTimeout time.Duration
	// Logger receives writer errors. Default slog.Default().
	Logger *slog.Logger
}

// TripletWriter publishes triplet chunks, acknowledged by all in-sync
// replicas.
type TripletWriter struct {
	cfg TripletWriterConfig
	tr  *kafka.Transport
	w   *kafka.Writer
}

// NewTripletWriter returns a writer; EnsureTopic creates its topic.
func NewTripletWriter(cfg TripletWriterConfig) (*TripletWriter, error) {
	if len(cfg.Brokers) == 0 {
		return nil, errors.New("new triplet writer: no brokers")
	}
	if cfg.Topic == "" {
		cfg.Topic = DefaultTripletsTopic
	}
	if cfg.Partitions <= 0 {
		cfg.Partitions = DefaultPartitions
	}
	if cfg.WriteTimeout <= 0 {
		cfg.WriteTimeout = 30 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	t := &TripletWriter{cfg: cfg, tr: newTransport()}
	log := cfg.Logger.With("topic", cfg.Topic)
	t.w = &kafka.Writer{
		Addr:      kafka.TCP(cfg.Brokers...),
		Topic:     cfg.Topic,
		Balancer:  &kafka.Hash{},
		BatchSize: 64,
		// Brokers refuse record batches above message.max.bytes, 1 MB by
		// default; a message of DefaultPublishChunk triplets is 240 kB.
		BatchBytes:   1_000_000,
		BatchTimeout: 5 * time.Millisecond,
		ReadTimeout:  cfg.WriteTimeout,
		WriteTimeout: cfg.WriteTimeout,
		RequiredAcks: kafka.RequireAll,
		Transport:    t.tr,
		ErrorLogger: kafka.LoggerFunc(func(msg string, args ...any) {
			log.Warn("kafka writer: " + fmt.Sprintf(msg, args...))
		}),
	}
	return t, nil
}

// Topic returns the topic written to.
func (t *TripletWriter) Topic() string { return t.cfg.Topic }

// EnsureTopic creates the topic if it is missing and waits until it is
// served.
func (t *TripletWriter) EnsureTopic(ctx context.Context) error {
	return ensureTopics(ctx, t.cfg.Brokers, []string{t.cfg.Topic},
		TopicConfig{Partitions: t.cfg.Partitions}.withDefaults())
}

// Publish writes the chunks in order and returns once all were
// acknowledged; an unreachable broker yields an error wrapping
// alignet.ErrUnavailable.
func (t *TripletWriter) Publish(ctx context.Context, chunks []TripletChunk) error {
	msgs := make([]kafka.Message, 0, len(chunks))
	for _, c := range chunks {
		m, err := EncodeTriplets(c)
		if err != nil {
			return err
		}
		msgs = append(msgs, m)
	}
	if err := t.w.WriteMessages(ctx, msgs...); err != nil {
		return unavailable("publish triplets", err)
	}
	return nil
}

// Ping reports whether the brokers answer and the topic is served.
func (t *TripletWriter) Ping(ctx context.Context) error {
	return Ping(ctx, t.cfg.Brokers, t.cfg.Topic)
}

// Close flushes and closes the writer.
func (t *TripletWriter) Close() error {
	err := t.w.Close()
	t.tr.CloseIdleConnections()
	return err
}
