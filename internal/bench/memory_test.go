package bench

import (
	"os"
	"runtime"
	"runtime/debug"
	"testing"
)

func TestParseStatus(t *testing.T) {
	tests := []struct {
		name, status string
		want         memory
		err          bool
	}{
		{name: "linux", status: "Name:\tserve\nVmHWM:\t   72200 kB\nVmRSS:\t   71460 kB\nRssAnon:\t   41120 kB\nRssFile:\t   30340 kB\n",
			want: memory{rss: 71460 << 10, anon: 41120 << 10, peak: 72200 << 10}},
		{name: "no anon", status: "VmHWM:\t1 kB\nVmRSS:\t1 kB\n", err: true},
		{name: "bad number", status: "VmHWM:\tx kB\nVmRSS:\t1 kB\nRssAnon:\t1 kB\n", err: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseStatus(tt.status)
			if (err != nil) != tt.err || got != tt.want {
				t.Errorf("parseStatus(%q) = %+v, %v; want %+v, error %v", tt.status, got, err, tt.want, tt.err)
			}
		})
	}
}

// TestResetPeakRSS touches 64 MiB, gives it back to the OS, and checks
// that the peak is the current RSS again after a reset.
func TestResetPeakRSS(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("reads /proc")
	}
	pid := os.Getpid()
	big := make([]byte, 64<<20)
	for i := range big {
		big[i] = 1
	}
	runtime.KeepAlive(big)
	big = nil
	debug.FreeOSMemory()
	before, err := processMemory(pid)
	if err != nil {
		t.Fatal(err)
	}
	if before.peak < before.rss+48<<20 {
		t.Skipf("peak %d MiB is not above RSS %d MiB: the memory was not returned", before.peak>>20, before.rss>>20)
	}
	resetPeakRSS(pid)
	after, err := processMemory(pid)
	if err != nil {
		t.Fatal(err)
	}
	if after.peak > before.rss+16<<20 {
		t.Errorf("after resetPeakRSS, VmHWM = %d MiB; want about the RSS, %d MiB (was %d MiB)", after.peak>>20, before.rss>>20, before.peak>>20)
	}
}
