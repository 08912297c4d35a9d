import { startDnsmasq, type DnsmasqServer, type DnsRecords } from '../../bench/dnsmasq.js';
import { commandFrom } from './debian-packages.js';

export type { DnsmasqServer, DnsRecords, SrvRecord } from '../../bench/dnsmasq.js';

/**
 * A real DNS server on loopback answering `records` (see bench/dnsmasq.ts). Debian's dnsmasq-base
 * is the binary alone: installing it starts no system DNS service, unlike the dnsmasq package.
 */
export function startDns(records: DnsRecords): Promise<DnsmasqServer> {
  return startDnsmasq(commandFrom('dnsmasq-base'), records);
}
