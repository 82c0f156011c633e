// Package stream moves accepted judgments through Kafka, between the API and
// the stores.
//
// One Kafka message carries one accepted HTTP request: a batch of judgments
// of one study, keyed by the study id, so that a batch is atomic in the log
// and the judgments of a study stay in order on one partition (EncodeBatch,
// DecodeBatch).
//
// The Producer publishes synchronously with acks=all: Publish returns only
// after the batch is durable, so the API may answer 202 Accepted. Concurrent
// Publish calls are batched into shared produce requests. When Kafka cannot
// be reached, Publish fails within ProducerConfig.WriteTimeout with an error
// wrapping alignet.ErrUnavailable.
//
// The Persister is a consumer group that stores judgments in a Sink with
// at-least-once delivery: it commits offsets only after the sink committed,
// and relies on the sink being idempotent by (study, id) for exactly-once
// storage. Transient sink errors (the database is down, a deadlock) are
// retried forever with capped backoff. Messages that do not decode, and
// messages the sink rejects permanently (an error wrapping
// alignet.ErrInvalid, found by bisecting the batch by message), are copied
// to a dead-letter topic with the reason and source position in headers,
// and then committed, so that one bad message cannot stall a partition.
// Persister.Ready and the alignet_persister_stuck metric report a batch
// that stays uncommitted for longer than PersisterConfig.StuckAfter.
//
// EnsureTopics creates the topics; Ping backs readiness probes.
package stream
