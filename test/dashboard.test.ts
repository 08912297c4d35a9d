import { describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import { ProxyMetrics } from '../src/observe/metrics.js';

/**
 * dashboards/limpet.json must keep working against what limpet really exposes: every PromQL expression
 * may only name metrics that a live ProxyMetrics registry serves (the contract's limpet_* metrics plus
 * prom-client's process defaults), so renaming a metric on either side fails here.
 */
const dashboard = JSON.parse(readFileSync(new URL('../dashboards/limpet.json', import.meta.url), 'utf8')) as Dashboard;

interface Target {
  refId?: string;
  expr?: string;
  datasource?: { type?: string; uid?: string };
}
interface Panel {
  id: number;
  type: string;
  title: string;
  gridPos: { h: number; w: number; x: number; y: number };
  datasource?: { type?: string; uid?: string };
  targets?: Target[];
  panels?: Panel[];
}
interface Dashboard {
  schemaVersion: number;
  __inputs?: { name: string; type: string; pluginId: string }[];
  panels: Panel[];
  annotations: { list: { expr?: string }[] };
  templating: { list: { name: string; type: string; multi?: boolean; definition?: string; query?: string | { query: string } }[] };
}

/** The metric names the contract fixes (spec: Metrics). */
const CONTRACT = [
  'limpet_backend_up',
  'limpet_backend_draining',
  'limpet_requests_total',
  'limpet_request_duration_seconds',
  'limpet_backend_inflight_requests',
  'limpet_sessions',
  'limpet_session_remaps_total',
  'limpet_health_checks_total',
  'limpet_upstream_retries_total',
  'limpet_websocket_connections',
  'limpet_config_reloads_total',
];

/** Every series name the real registry can expose, histogram and summary series included. */
async function exposedNames(): Promise<Set<string>> {
  const metrics = new ProxyMetrics({ backends: () => [], sessionsByBackend: () => new Map(), drainProgress: () => new Map(), effectiveWeight: () => 0, sharedState: () => null });
  const names = new Set<string>();
  for (const metric of await metrics.registry.getMetricsAsJSON()) {
    names.add(metric.name);
    if (metric.type === 'histogram') for (const suffix of ['_bucket', '_sum', '_count']) names.add(metric.name + suffix);
    if (metric.type === 'summary') for (const suffix of ['_sum', '_count']) names.add(metric.name + suffix);
  }
  return names;
}

const NOT_METRICS = new Set(['by', 'without', 'on', 'ignoring', 'group_left', 'group_right', 'bool', 'and', 'or', 'unless', 'offset', 'inf', 'nan']);

/** The metric names a PromQL expression selects: identifiers outside strings, matchers, ranges and groupings that are not calls. */
function metricNames(expr: string): string[] {
  let text = expr.replace(/"(?:[^"\\]|\\.)*"/g, '""');
  text = text.replace(/\{[^}]*\}/g, ' ');
  text = text.replace(/\[[^\]]*\]/g, ' ');
  text = text.replace(/\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)/g, ' ');
  text = text.replace(/\$\{?\w+\}?/g, ' ');
  const names: string[] = [];
  for (const match of text.matchAll(/(?<![\w.])[a-zA-Z_:][a-zA-Z0-9_:]*/g)) {
    const rest = text.slice(match.index! + match[0].length).trimStart();
    if (rest.startsWith('(')) continue;
    if (NOT_METRICS.has(match[0].toLowerCase())) continue;
    names.push(match[0]);
  }
  return names;
}

function allPanels(panels: Panel[]): Panel[] {
  return panels.flatMap((panel) => [panel, ...allPanels(panel.panels ?? [])]);
}

/** Every PromQL expression in the dashboard, with where it is: panel targets, annotations, variable queries. */
function expressions(): { where: string; expr: string }[] {
  const found: { where: string; expr: string }[] = [];
  for (const panel of allPanels(dashboard.panels)) for (const target of panel.targets ?? []) found.push({ where: `panel "${panel.title}" ${target.refId ?? ''}`, expr: target.expr ?? '' });
  for (const annotation of dashboard.annotations.list) if (annotation.expr !== undefined) found.push({ where: 'annotation', expr: annotation.expr });
  for (const variable of dashboard.templating.list) {
    if (variable.type !== 'query') continue;
    const query = typeof variable.query === 'string' ? variable.query : (variable.query?.query ?? '');
    const labelValues = /^label_values\((.*),\s*\w+\s*\)$/.exec(query);
    found.push({ where: `variable $${variable.name}`, expr: labelValues ? (labelValues[1] as string) : query });
  }
  return found;
}

describe('metricNames', () => {
  it('finds selected metrics and skips functions, labels, ranges and variables', () => {
    expect(metricNames('histogram_quantile(0.95, sum by (backend, le) (rate(limpet_request_duration_seconds_bucket{backend=~"$backend", le!="x_y"}[$__rate_interval])))')).toEqual(['limpet_request_duration_seconds_bucket']);
    expect(metricNames('sum(rate(a_total[5m])) by (code) / on (code) group_left b_total offset 5m or vector(0)')).toEqual(['a_total', 'b_total']);
  });
});

describe('Grafana dashboard', () => {
  it('is importable: Prometheus datasource input, backend and instance variables, schema version', () => {
    expect(dashboard.schemaVersion).toBeGreaterThanOrEqual(36);
    expect(dashboard.__inputs).toContainEqual(expect.objectContaining({ name: 'DS_PROMETHEUS', type: 'datasource', pluginId: 'prometheus' }));
    const variables = new Map(dashboard.templating.list.map((v) => [v.name, v]));
    expect(variables.get('DS_PROMETHEUS')?.type).toBe('datasource');
    expect(variables.get('backend')).toMatchObject({ type: 'query', multi: true });
    expect(variables.get('backend')?.definition).toMatch(/^label_values\(limpet_backend_up\b.*, backend\)$/);
    expect(variables.get('instance')?.type).toBe('query');
  });

  it('names only metrics limpet exposes in every expression', async () => {
    const known = await exposedNames();
    const unknown: string[] = [];
    const exprs = expressions();
    expect(exprs.length).toBeGreaterThan(10);
    for (const { where, expr } of exprs) {
      const names = metricNames(expr);
      expect(names.length, `${where}: no metric in ${expr}`).toBeGreaterThan(0);
      for (const name of names) if (!known.has(name)) unknown.push(`${where}: ${name}`);
    }
    expect(unknown).toEqual([]);
  });

  it('charts every contract metric, and the registry still exposes each', async () => {
    const known = await exposedNames();
    const used = new Set(expressions().flatMap(({ expr }) => metricNames(expr)));
    for (const name of CONTRACT) {
      expect(known.has(name), `registry exposes ${name}`).toBe(true);
      expect([...used].some((u) => u === name || u.startsWith(`${name}_`)), `dashboard uses ${name}`).toBe(true);
    }
    for (const name of ['process_cpu_seconds_total', 'process_resident_memory_bytes']) expect(used.has(name), name).toBe(true);
  });

  it('counts each backend once across replicas: limpet_backend_up is taken per backend before it is counted', () => {
    // Every replica reports every backend; a plain sum or count would multiply by the replicas.
    const perBackend = /(?:max|min) by \(backend\) \(limpet_backend_up\{[^}]*\}\)/g;
    const uses = expressions().filter(({ where, expr }) => !where.startsWith('variable') && metricNames(expr).includes('limpet_backend_up'));
    expect(uses.length).toBeGreaterThanOrEqual(3);
    for (const { where, expr } of uses) expect(expr.match(perBackend)?.length ?? 0, `${where}: ${expr}`).toBe(expr.split('limpet_backend_up').length - 1);
    const stat = (title: string) => allPanels(dashboard.panels).find((p) => p.title === title)?.targets?.[0]?.expr;
    expect(stat('Backends up')).toMatch(/^count\(max by \(backend\) \(limpet_backend_up\{[^}]*\}\) == 1\)/);
    expect(stat('Backends down')).toMatch(/^count\(max by \(backend\) \(limpet_backend_up\{[^}]*\}\) == 0\)/);
  });

  it('has unique panel ids, the Prometheus input on every query panel, and no overlapping panels', () => {
    const panels = allPanels(dashboard.panels);
    expect(new Set(panels.map((p) => p.id)).size).toBe(panels.length);
    for (const panel of panels.filter((p) => p.type !== 'row')) {
      expect(panel.datasource?.uid, panel.title).toBe('${DS_PROMETHEUS}');
      for (const target of panel.targets ?? []) expect(target.datasource?.uid ?? '${DS_PROMETHEUS}', panel.title).toBe('${DS_PROMETHEUS}');
      expect(panel.targets?.length, panel.title).toBeGreaterThan(0);
    }
    const boxes = dashboard.panels.map((p) => ({ title: p.title, ...p.gridPos }));
    for (const [i, a] of boxes.entries()) {
      expect(a.x + a.w, a.title).toBeLessThanOrEqual(24);
      for (const b of boxes.slice(i + 1)) {
        const overlap = a.x < b.x + b.w && b.x < a.x + a.w && a.y < b.y + b.h && b.y < a.y + a.h;
        expect(overlap, `${a.title} overlaps ${b.title}`).toBe(false);
      }
    }
  });
});
