//go:build race

package api

// raceEnabled reports whether the race detector is on; it makes the large
// upload test too slow, so that test runs only without -race.
const raceEnabled = true
