package sessions

import (
	"compress/flate"
	"fmt"
	"io"
	"strings"
	"sync"
	"testing"
)

// Seals made at the same moment share one compressor, in turn: each block inflates to the
// entries it was made from.
func TestCompressEntriesConcurrent(t *testing.T) {
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 50 {
				var entries []string
				for k := range 16 {
					entries = append(entries, fmt.Sprintf(`[%d,"files","read","files__read",{"p":"/%d/%d"}]`, k, g, i))
				}
				block, err := compressEntries(entries)
				if err != nil {
					t.Errorf("compressEntries: %v", err)
					return
				}
				raw, err := io.ReadAll(flate.NewReader(strings.NewReader(block)))
				if err != nil {
					t.Errorf("inflate: %v", err)
					return
				}
				if got, want := string(raw), strings.Join(entries, "\n"); got != want {
					t.Errorf("compressEntries(%d, %d) inflates to\n%s\nwant\n%s", g, i, got, want)
					return
				}
			}
		})
	}
	wg.Wait()
}
