// Command opamp-server serves the OpAMP endpoint (placeholder) on :4320 and a
// small REST API for the collector configuration on :4321.
package main

import (
	"io"
	"log"
	"net/http"
	"os"
	"sync"
)

type configStore struct {
	mu   sync.RWMutex
	yaml []byte
}

func (s *configStore) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch r.Method {
	case http.MethodGet:
		s.mu.RLock()
		defer s.mu.RUnlock()
		w.Header().Set("Content-Type", "application/yaml")
		w.Write(s.yaml)
	case http.MethodPut, http.MethodPost:
		body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		s.mu.Lock()
		s.yaml = body
		s.mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	default:
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
	}
}

func opamp(w http.ResponseWriter, r *http.Request) {
	// Placeholder: a real server speaks the OpAMP protobuf/WebSocket protocol here.
	w.Header().Set("Content-Type", "application/x-protobuf")
	w.WriteHeader(http.StatusOK)
}

func main() {
	store := &configStore{yaml: []byte(os.Getenv("DEFAULT_COLLECTOR_CONFIG"))}

	opampMux := http.NewServeMux()
	opampMux.HandleFunc("/v1/opamp", opamp)
	apiMux := http.NewServeMux()
	apiMux.Handle("/api/config", store)
	apiMux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok\n") })

	errc := make(chan error, 2)
	go func() { errc <- http.ListenAndServe(":4320", opampMux) }()
	go func() { errc <- http.ListenAndServe(":4321", apiMux) }()
	log.Printf("opamp-server: OpAMP on :4320, config API on :4321")
	log.Fatal(<-errc)
}
