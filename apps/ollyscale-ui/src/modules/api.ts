// Thin client for the ollyScale REST API (served under /api).

export interface Health {
  status: string;
  mode: string;
  checked_at: string;
}

export interface TraceSummary {
  trace_id: string;
  root_service: string;
  span_count: number;
  duration_ms: number;
}

async function getJSON<T>(path: string): Promise<T> {
  const res = await fetch(`/api${path}`, { headers: { Accept: 'application/json' } });
  if (!res.ok) {
    throw new Error(`GET /api${path} failed: ${res.status} ${res.statusText}`);
  }
  return (await res.json()) as T;
}

export const fetchHealth = (): Promise<Health> => getJSON<Health>('/health');

export const fetchTraces = (limit = 50): Promise<TraceSummary[]> =>
  getJSON<TraceSummary[]>(`/traces?limit=${limit}`);
