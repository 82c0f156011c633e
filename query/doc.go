// Package query decides what participants are asked next: it draws the
// candidate pool of a study, rescores it under each new teacher with the
// study's scorer (predictive entropy, expected information gain, or
// teacher–student disagreement), and serves queries to participant
// sessions in the study's mix of active, random, repeat and check kinds,
// never showing a worker the same triplet twice, balancing item exposure,
// discounting a candidate each time it is handed out and expiring
// unanswered queries.
//
// It does no I/O: the API feeds it teacher snapshots and stored sessions,
// and persists what it serves. Clocks, identifiers and randomness are
// passed in or seeded, so everything is unit-testable and reproducible.
package query
