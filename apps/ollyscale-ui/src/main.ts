import { fetchHealth, fetchTraces, type TraceSummary } from './modules/api';

function renderTraces(rows: TraceSummary[]): void {
  const body = document.querySelector<HTMLTableSectionElement>('#traces tbody');
  if (!body) return;
  body.replaceChildren(
    ...rows.map((t) => {
      const tr = document.createElement('tr');
      for (const cell of [t.trace_id.slice(0, 8), t.root_service, String(t.span_count), t.duration_ms.toFixed(1)]) {
        const td = document.createElement('td');
        td.textContent = cell;
        tr.appendChild(td);
      }
      return tr;
    }),
  );
}

async function refresh(): Promise<void> {
  const badge = document.getElementById('health');
  try {
    const health = await fetchHealth();
    if (badge) badge.textContent = `backend: ${health.status}`;
    renderTraces(await fetchTraces());
  } catch (err) {
    if (badge) badge.textContent = `backend unreachable: ${(err as Error).message}`;
  }
}

void refresh();
setInterval(() => void refresh(), 5000);
