package sessions

import (
	"bytes"
	"errors"
	"fmt"
	"io"

	"go.yaml.in/yaml/v3"
)

// ParseSpec decodes a Spec from YAML strictly (an unknown key is an error, so a typo is not
// silently ignored) and validates it.
func ParseSpec(data []byte) (Spec, error) {
	var s Spec
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&s); err != nil && !errors.Is(err, io.EOF) {
		return Spec{}, fmt.Errorf("%w: session spec: %v", ErrInvalid, err)
	}
	if err := s.Validate(); err != nil {
		return Spec{}, fmt.Errorf("session spec: %w", err)
	}
	return s, nil
}
