/** What the parser remembers between records: where it is in the stream and what setup declared. */

export type Phase =
  | 'magic' // before the 8-byte header
  | 'top' // between sections
  | 'ram' // inside a ram section's body, RAM records until EOS
  | 'ram-footer' // after EOS, before the section footer
  | 'device'; // after the first FULL section (or EOF): opaque to the end

export class ParserState {
  phase: Phase = 'magic';
  /** Records seen so far (the configuration is only valid right after the header). */
  records = 0;
  /** Section id of the `ram` section, once START declared it. */
  ramSectionId: number | null = null;
  /** The section whose body is being parsed. */
  currentSection = -1;
  currentSectionType: 'start' | 'part' | 'end' = 'start';
  /** RAMBlock id -> used length, from MEM_SIZE. */
  readonly blocks = new Map<string, number>();
  /** Bytes of MEM_SIZE's total still to be declared by block entries. */
  memSizeRemaining = 0;
  /** The block of the previous ZERO or PAGE record: what CONTINUE refers to, across sections. */
  lastBlock: string | null = null;
  /** OPEN_RETURN_PATH was seen: refused at the first record that is not a command. */
  returnPathOpened = false;
}
