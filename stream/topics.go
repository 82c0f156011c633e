package stream

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/alignet/alignet"
)

// Default topic names and layout.
const (
	DefaultJudgmentsTopic    = "alignet.judgments"
	DefaultDeadLetterTopic   = "alignet.judgments.dlq"
	DefaultPartitions        = 6
	DefaultReplicationFactor = 1
)

// TopicConfig describes the topics of the judgment pipeline.
type TopicConfig struct {
	// Judgments is the topic of judgment batches. Default "alignet.judgments".
	Judgments string
	// DeadLetters is the topic of undecodable messages. Default
	// "alignet.judgments.dlq".
	DeadLetters string
	// Partitions is the number of partitions of each topic. Default 6.
	Partitions int
	// ReplicationFactor is the replication factor of each topic. Default 1.
	ReplicationFactor int
}

func (c TopicConfig) withDefaults() TopicConfig {
	if c.Judgments == "" {
		c.Judgments = DefaultJudgmentsTopic
	}
	if c.DeadLetters == "" {
		c.DeadLetters = DefaultDeadLetterTopic
	}
	if c.Partitions <= 0 {
		c.Partitions = DefaultPartitions
	}
	if c.ReplicationFactor <= 0 {
		c.ReplicationFactor = DefaultReplicationFactor
	}
	return c
}

// newTransport returns a transport owned by one component, so that no
// connection pool is shared through kafka.DefaultTransport.
func newTransport() *kafka.Transport {
	return &kafka.Transport{DialTimeout: 3 * time.Second, MetadataTTL: 5 * time.Second}
}

// unavailable wraps err with alignet.ErrUnavailable and context.
func unavailable(what string, err error) error {
	return fmt.Errorf("%s: %w: %w", what, alignet.ErrUnavailable, err)
}

// EnsureTopics creates the judgment and dead-letter topics if they are
// missing, tolerating topics that already exist, and waits until every
// partition of both topics has a leader that serves it. Existing topics are not altered.
func EnsureTopics(ctx context.Context, brokers []string, cfg TopicConfig) error {
	cfg = cfg.withDefaults()
	return ensureTopics(ctx, brokers, []string{cfg.Judgments, cfg.DeadLetters}, cfg)
}

// ensureTopics creates the topics if they are missing and waits until
// every partition is served.
func ensureTopics(ctx context.Context, brokers []string, topics []string, cfg TopicConfig) error {
	if len(brokers) == 0 {
		return errors.New("ensure topics: no brokers")
	}
	tr := newTransport()
	defer tr.CloseIdleConnections()
	client := &kafka.Client{Addr: kafka.TCP(brokers...), Transport: tr, Timeout: 10 * time.Second}

	req := &kafka.CreateTopicsRequest{}
	for _, t := range topics {
		req.Topics = append(req.Topics, kafka.TopicConfig{
			Topic: t, NumPartitions: cfg.Partitions, ReplicationFactor: cfg.ReplicationFactor,
		})
	}
	resp, err := client.CreateTopics(ctx, req)
	if err != nil {
		return unavailable("ensure topics: create", err)
	}
	for t, terr := range resp.Errors {
		if terr != nil && !errors.Is(terr, kafka.TopicAlreadyExists) {
			return fmt.Errorf("ensure topics: create %q: %w", t, terr)
		}
	}
	// Topic creation is asynchronous in Kafka: wait until metadata shows
	// every partition with a leader and each leader serves it, asking over
	// fresh connections each time.
	backoff := 50 * time.Millisecond
	for {
		ids, err := topicPartitions(ctx, brokers, topics)
		if err == nil {
			if err = partitionsServing(ctx, brokers, topics, ids); err == nil {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("ensure topics: wait for leaders: %w (last: %w)", ctx.Err(), err)
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, time.Second)
	}
}

// topicsReady asks one reachable broker for the partitions of the topics
// over a fresh connection and checks that each has a leader.
func topicsReady(ctx context.Context, brokers []string, topics []string) error {
	_, err := topicPartitions(ctx, brokers, topics)
	return err
}

// topicPartitions returns the partition ids of each topic, failing unless
// every partition has a leader.
func topicPartitions(ctx context.Context, brokers []string, topics []string) (map[string][]int, error) {
	conn, err := dialAny(ctx, brokers)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	parts, err := conn.ReadPartitions(topics...)
	if err != nil {
		return nil, unavailable("read partitions", err)
	}
	ids := make(map[string][]int, len(topics))
	for _, p := range parts {
		if p.Error != nil {
			return nil, fmt.Errorf("topic %q partition %d: %w", p.Topic, p.ID, p.Error)
		}
		if p.Leader.Host == "" {
			return nil, fmt.Errorf("topic %q partition %d: no leader", p.Topic, p.ID)
		}
		ids[p.Topic] = append(ids[p.Topic], p.ID)
	}
	for _, t := range topics {
		if len(ids[t]) == 0 {
			return nil, fmt.Errorf("topic %q: %w", t, kafka.UnknownTopicOrPartition)
		}
	}
	return ids, nil
}

// partitionsServing checks that the leader of every partition of the topics
// answers a ListOffsets request. Right after creation Kafka can name a
// leader in its metadata while that broker still answers "not leader".
func partitionsServing(ctx context.Context, brokers []string, topics []string, partitions map[string][]int) error {
	tr := newTransport()
	defer tr.CloseIdleConnections()
	client := &kafka.Client{Addr: kafka.TCP(brokers...), Transport: tr, Timeout: 5 * time.Second}
	req := &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{}}
	for _, t := range topics {
		for _, id := range partitions[t] {
			req.Topics[t] = append(req.Topics[t], kafka.LastOffsetOf(id))
		}
	}
	resp, err := client.ListOffsets(ctx, req)
	if err != nil {
		return unavailable("list offsets", err)
	}
	for _, t := range topics {
		if len(resp.Topics[t]) != len(partitions[t]) {
			return fmt.Errorf("topic %q: offsets of %d of %d partitions", t, len(resp.Topics[t]), len(partitions[t]))
		}
		for _, p := range resp.Topics[t] {
			if p.Error != nil {
				return fmt.Errorf("topic %q partition %d: %w", t, p.Partition, p.Error)
			}
		}
	}
	return nil
}

// dialAny connects to the first reachable broker. The connection's deadline
// follows ctx, or is five seconds when ctx has none.
func dialAny(ctx context.Context, brokers []string) (*kafka.Conn, error) {
	d := &kafka.Dialer{Timeout: 3 * time.Second}
	deadline, ok := ctx.Deadline()
	if !ok {
		deadline = time.Now().Add(5 * time.Second)
	}
	var errs []error
	for _, b := range brokers {
		conn, err := d.DialContext(ctx, "tcp", b)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if err := conn.SetDeadline(deadline); err != nil {
			conn.Close()
			errs = append(errs, err)
			continue
		}
		return conn, nil
	}
	return nil, unavailable("dial brokers", errors.Join(errs...))
}

// Ping reports whether one of the brokers is reachable and answers a
// metadata request. With topics, it also requires that every partition of
// each topic has a leader. Failures wrap alignet.ErrUnavailable.
func Ping(ctx context.Context, brokers []string, topics ...string) error {
	if len(brokers) == 0 {
		return errors.New("ping kafka: no brokers")
	}
	if len(topics) > 0 {
		if err := topicsReady(ctx, brokers, topics); err != nil {
			if !errors.Is(err, alignet.ErrUnavailable) {
				err = unavailable("ping kafka", err)
			}
			return err
		}
		return nil
	}
	conn, err := dialAny(ctx, brokers)
	if err != nil {
		return fmt.Errorf("ping kafka: %w", err)
	}
	defer conn.Close()
	if _, err := conn.Brokers(); err != nil {
		return unavailable("ping kafka", err)
	}
	return nil
}
