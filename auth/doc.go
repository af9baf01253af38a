// Package auth holds what Kafka clients authenticate against: SCRAM
// credentials (only salted keys, never a password), the store the broker
// keeps them in, and the bootstrap users file. It imports nothing of
// Chronik's; the kafka package verifies SASL exchanges with it and the
// broker replicates its contents through the cluster metadata.
package auth
