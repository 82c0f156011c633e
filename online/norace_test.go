//go:build !race

package online

// raceEnabled reports whether the race detector is on; heavy numeric
// tests skip themselves under it.
const raceEnabled = false
