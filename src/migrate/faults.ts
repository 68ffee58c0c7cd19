/**
 * Test-only faults: each is a bug of the kind the oracle (guest/fingerprint.ts)
 * must catch, injected on purpose to show that it does (test/migrate/oracle.test.ts).
 * Only code that calls the engine in-process can set them: no CLI flag, control
 * request or environment variable reaches them. `fired` records what each did.
 */
export interface Faults {
  /**
   * Source: once paused, one page is written without its dirty bit (as a DMA the
   * tracking misses): neither resent nor rehashed. The page is chosen in a digest
   * chunk that is settled, so the digests agree and only the oracle can tell.
   */
  dropDirtyBit?: boolean;
  /** Source: in this round, one byte of the first full page is flipped in the PAGES frame after the page was taken. */
  corruptWirePage?: { round: number };
  /** Destination: one fetched block is applied to its page although a newer version of the page arrived first. */
  applyStaleBlock?: boolean;
  fired?: { dropDirtyBit?: number; corruptWirePage?: number; applyStaleBlock?: number };
}
