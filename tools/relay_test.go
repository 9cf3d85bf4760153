package tools

import (
	"context"
	"encoding/json"
	"testing"
)

type nopRelay struct{ name string }

func (nopRelay) Request(context.Context, string, json.RawMessage) (json.RawMessage, error) {
	return nil, nil
}
func (nopRelay) Notify(string, json.RawMessage) {}

// TestRelaySetSole: an upstream message without a request to belong to goes
// to an agent only when exactly one agent request is in flight.
func TestRelaySetSole(t *testing.T) {
	a, b := &nopRelay{"a"}, &nopRelay{"b"}
	tests := []struct {
		name     string
		inFlight []Relay
		want     Relay
	}{
		{"none in flight", nil, nil},
		{"one", []Relay{a}, a},
		{"two requests of the same agent request", []Relay{a, a}, a},
		{"two agents", []Relay{a, b}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var s relaySet
			var done []*relayEntry
			for _, r := range tt.inFlight {
				done = append(done, s.add(r))
			}
			if got := s.sole(); got != tt.want {
				t.Errorf("sole() with %v in flight = %v; want %v", tt.inFlight, got, tt.want)
			}
			for _, e := range done {
				s.remove(e)
			}
			if got := s.sole(); got != nil {
				t.Errorf("sole() after every request ended = %v; want nil", got)
			}
		})
	}
}
