package sessions

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
)

// List order: without an agent, sessions come by state (in the order of States), then by id;
// with an agent, by id. A cursor names the last session of a page: "state:id" or "id".

// listCursor is a position in a List walk: the rank of the state (0 when walking an agent)
// and the last id returned.
type listCursor struct {
	rank int
	id   string
}

func (c listCursor) compare(o listCursor) int {
	if r := cmp.Compare(c.rank, o.rank); r != 0 {
		return r
	}
	return cmp.Compare(c.id, o.id)
}

// listKey is the position of s in a List walk.
func listKey(s *Session, agentWalk bool) listCursor {
	if agentWalk {
		return listCursor{id: s.ID}
	}
	return listCursor{rank: slices.Index(States, s.State), id: s.ID}
}

// nextCursor is the cursor that continues a List after s.
func nextCursor(s *Session, agentWalk bool) string {
	if agentWalk {
		return s.ID
	}
	return string(s.State) + ":" + s.ID
}

func parseListCursor(s string, agentWalk bool) (listCursor, error) {
	if s == "" {
		return listCursor{}, nil
	}
	bad := fmt.Errorf("%w: cursor %q: pass Page.Next unchanged", ErrInvalid, s)
	if agentWalk {
		if validID(s) != nil {
			return listCursor{}, bad
		}
		return listCursor{id: s}, nil
	}
	for i, st := range States {
		if id, ok := strings.CutPrefix(s, string(st)+":"); ok && validID(id) == nil {
			return listCursor{rank: i, id: id}, nil
		}
	}
	return listCursor{}, bad
}
