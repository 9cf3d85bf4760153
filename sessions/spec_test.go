package sessions_test

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/toolgate/toolgate/sessions"
)

func TestParseSpec(t *testing.T) {
	good := `
agent: ci-bot
profile: build
labels: [ci]
scope: ["files__read_*"]
lifetime: 1h
idle_timeout: 5m
budget: 50
history_limit: 100
`
	s, err := sessions.ParseSpec([]byte(good))
	if err != nil {
		t.Fatalf("ParseSpec(good) error: %v", err)
	}
	if s.Agent != "ci-bot" || s.Lifetime != time.Hour || s.IdleTimeout != 5*time.Minute || s.Budget != 50 ||
		s.HistoryLimit != 100 || !slices.Equal(s.Scope, []string{"files__read_*"}) {
		t.Errorf("ParseSpec(good) = %+v", s)
	}
	tests := []struct {
		name, yaml, wantMsg string
	}{
		{"typo", "agent: a\nscope: ['*']\nlifetime: 1h\nidle_timout: 5m\n", "idle_timout"},
		{"no scope", "agent: a\nlifetime: 1h\n", `["*"]`},
		{"no lifetime", "agent: a\nscope: ['*']\n", "lifetime"},
		{"bad duration", "agent: a\nscope: ['*']\nlifetime: soon\n", "soon"},
		{"empty", "", "agent"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := sessions.ParseSpec([]byte(tt.yaml))
			if !errors.Is(err, sessions.ErrInvalid) || !strings.Contains(err.Error(), tt.wantMsg) {
				t.Errorf("ParseSpec(%q) error = %v; want ErrInvalid mentioning %q", tt.yaml, err, tt.wantMsg)
			}
		})
	}
}

func TestMatch(t *testing.T) {
	tests := []struct {
		glob, name string
		want       bool
	}{
		{"*", "anything", true},
		{"*", "", true},
		{"files__read_file", "files__read_file", true},
		{"files__read_file", "files__read_files", false},
		{"files__*", "files__", true},
		{"files__*", "file__x", false},
		{"*__delete", "db__delete", true},
		{"*__delete", "db__delete_all", false},
		{"a*b*c", "abc", true},
		{"a*b*c", "aXbYc", true},
		{"a*b*c", "acb", false},
		{"a*a", "a", false},
		{"ab*ba", "aba", false},
	}
	for _, tt := range tests {
		if got := sessions.Match(tt.glob, tt.name); got != tt.want {
			t.Errorf("Match(%q, %q) = %v; want %v", tt.glob, tt.name, got, tt.want)
		}
	}
}

func TestTokens(t *testing.T) {
	a, ha := sessions.NewToken()
	b, hb := sessions.NewToken()
	if a == b || ha == hb {
		t.Fatal("NewToken returned the same token twice")
	}
	if sessions.HashToken(a) != ha {
		t.Errorf("HashToken(token) differs from the hash NewToken returned")
	}
	if !strings.HasPrefix(a, "tgs_") || len(a) != 4+43 {
		t.Errorf("token %q: want tgs_ and 43 base64url characters (256 bits)", a)
	}
	if id := sessions.IDFromHash(ha); len(id) != 32 {
		t.Errorf("IDFromHash = %q; want 32 hex characters", id)
	}
}
