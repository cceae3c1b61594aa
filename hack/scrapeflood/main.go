// Command scrapeflood scrapes one URL from many concurrent clients, each on
// its own connection, for a while, and prints how many scrapes succeeded:
// the load of hack/scrape-flood.sh, which records the agent's memory under
// it.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

func main() {
	url := flag.String("url", "http://127.0.0.1:9400/metrics", "URL to scrape")
	clients := flag.Int("clients", 200, "concurrent clients, one connection each")
	duration := flag.Duration("duration", 10*time.Second, "how long to scrape")
	gz := flag.Bool("gzip", true, "ask for gzip (Accept-Encoding: gzip)")
	flag.Parse()

	ctx, cancel := context.WithTimeout(context.Background(), *duration)
	defer cancel()
	var ok, failed atomic.Int64
	var wg sync.WaitGroup
	for range *clients {
		wg.Go(func() {
			// One transport per client: one connection each, as many
			// scrapers would hold. DisableCompression: the body is read
			// as sent, not decompressed, which is not what is measured.
			c := &http.Client{Transport: &http.Transport{DisableCompression: true, MaxIdleConnsPerHost: 1}}
			for ctx.Err() == nil {
				req, _ := http.NewRequestWithContext(ctx, http.MethodGet, *url, nil)
				if *gz {
					req.Header.Set("Accept-Encoding", "gzip")
				}
				resp, err := c.Do(req)
				if err != nil {
					if ctx.Err() == nil {
						failed.Add(1)
					}
					continue
				}
				_, err = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if err == nil && resp.StatusCode == http.StatusOK {
					ok.Add(1)
				} else if ctx.Err() == nil {
					failed.Add(1)
				}
			}
		})
	}
	wg.Wait()
	fmt.Printf("scrapes: %d ok, %d failed (%d clients, %v, gzip %v)\n", ok.Load(), failed.Load(), *clients, *duration, *gz)
	if ok.Load() == 0 {
		os.Exit(1)
	}
}
