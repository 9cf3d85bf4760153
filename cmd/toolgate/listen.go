package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"
)

// httpServers runs the HTTP listeners of a subcommand until one fails or
// the context ends, then shuts them all down.
type httpServers struct {
	list []*http.Server
	errc chan error
}

// start listens on addr and serves handler there; what names the listener
// in errors.
func (h *httpServers) start(what, addr string, handler http.Handler) (net.Addr, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("%s listen: %w", what, err)
	}
	if h.errc == nil {
		h.errc = make(chan error, 4)
	}
	srv := &http.Server{Handler: handler, ReadHeaderTimeout: 10 * time.Second}
	h.list = append(h.list, srv)
	go func() { h.errc <- srv.Serve(ln) }()
	return ln.Addr(), nil
}

// wait blocks until a server fails (its error is returned) or ctx ends;
// then it runs beforeShutdown, if any, and shuts every server down within
// five seconds.
func (h *httpServers) wait(ctx context.Context, beforeShutdown func(context.Context)) error {
	select {
	case err := <-h.errc:
		return err
	case <-ctx.Done():
	}
	shutdown, stop := context.WithTimeout(context.Background(), 5*time.Second)
	defer stop()
	if beforeShutdown != nil {
		beforeShutdown(shutdown)
	}
	for _, s := range h.list {
		if err := s.Shutdown(shutdown); err != nil && !errors.Is(err, context.DeadlineExceeded) {
			return err
		}
	}
	return nil
}
