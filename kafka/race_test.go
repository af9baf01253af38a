//go:build race

package kafka

// raceEnabled: the race detector pads allocations, so allocation sizes
// measured in tests are not the real ones.
const raceEnabled = true
