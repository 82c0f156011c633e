// Package online is the learner role: it follows the judgments topic and
// keeps, for every study, a teacher that is updated within a second of each
// judgment, refitted exactly from the Postgres record in the background,
// versioned and evaluated on held-out human judgments.
package online
