import { describe, expect, it } from 'vitest';
import { AffinityCookieCodec, findCookie, serializeSetCookie } from '../src/affinity/cookie.js';

describe('affinity cookie codec', () => {
  const codec = new AffinityCookieCodec('s3cret');
  const now = 1_800_000_000;

  it('round-trips nonce, backend id, home id and expiry', () => {
    const nonce = codec.newNonce();
    expect(nonce).toMatch(/^[A-Za-z0-9_-]{16}$/);
    const value = codec.encode({ nonce, backendId: 'app.eu-1', homeId: null, expiresAt: now + 60, seenAt: 0 });
    expect(codec.decode(value, now)).toEqual({ nonce, backendId: 'app.eu-1', homeId: null, expiresAt: now + 60, seenAt: 0 });
    const remapped = codec.encode({ nonce, backendId: 'app-2', homeId: 'app-1', expiresAt: 0, seenAt: 0 });
    expect(codec.decode(remapped, now)).toEqual({ nonce, backendId: 'app-2', homeId: 'app-1', expiresAt: 0, seenAt: 0 });
  });

  it('rejects a cookie whose any part was changed', () => {
    const value = codec.encode({ nonce: codec.newNonce(), backendId: 'app-1', homeId: null, expiresAt: now + 60, seenAt: 0 });
    for (let i = 0; i < value.length; i++) {
      if (value[i] === '.') continue;
      const changed = value.slice(0, i) + (value[i] === 'x' ? 'y' : 'x') + value.slice(i + 1);
      expect(new AffinityCookieCodec('s3cret').decode(changed, now)).toBeNull();
    }
  });

  it('rejects a cookie signed with another secret, and an expired one', () => {
    const value = codec.encode({ nonce: codec.newNonce(), backendId: 'app-1', homeId: null, expiresAt: now + 60, seenAt: 0 });
    expect(new AffinityCookieCodec('other').decode(value, now)).toBeNull();
    expect(codec.decode(value, now + 60)).toBeNull();
    expect(codec.decode(value, now + 59)).not.toBeNull();
  });

  it('rejects malformed values without throwing', () => {
    for (const value of ['', '.', '....', 'a.b.c.d', 'x'.repeat(200), '%00%00', 'AAAAAAAAAAAAAAAA..0.AAAAAAAAAAAAAAAAAAAAAA']) {
      expect(codec.decode(value, now)).toBeNull();
    }
  });
});

describe('findCookie', () => {
  it('finds a cookie by exact name among others', () => {
    expect(findCookie('a=1; limpet=v1; b=2', 'limpet')).toBe('v1');
    expect(findCookie('xlimpet=no; limpet=yes', 'limpet')).toBe('yes');
    expect(findCookie('limpetx=no', 'limpet')).toBeUndefined();
    expect(findCookie('limpet="quoted"', 'limpet')).toBe('quoted');
    expect(findCookie('a=1', 'limpet')).toBeUndefined();
  });
});

describe('serializeSetCookie', () => {
  it('computes Expires from the time of each response', () => {
    const attributes = { name: 'limpet', maxAge: 3_600_000, path: '/', domain: null, httpOnly: true, secure: false, sameSite: 'lax' as const };
    const early = serializeSetCookie(attributes, 'v', Date.UTC(2030, 0, 1));
    const later = serializeSetCookie(attributes, 'v', Date.UTC(2030, 0, 2));
    expect(early).toBe('limpet=v; Path=/; Max-Age=3600; Expires=Tue, 01 Jan 2030 01:00:00 GMT; HttpOnly; SameSite=Lax');
    expect(later).toContain('Expires=Wed, 02 Jan 2030 01:00:00 GMT');
  });
});
