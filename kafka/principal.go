package kafka

// Principal is who a connection acts for, named as Kafka names principals
// ("User:alice"). The listener's authentication (a TLS client certificate
// or SASL) sets it once, before the connection's other requests are
// handled; a connection that has not authenticated is Anonymous.
type Principal struct {
	Type string // "User"
	Name string
}

// Anonymous is the principal of an unauthenticated connection.
var Anonymous = Principal{Type: "User", Name: "ANONYMOUS"}

func (p Principal) String() string { return p.Type + ":" + p.Name }
