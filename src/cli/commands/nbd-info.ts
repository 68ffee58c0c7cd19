/** `livemig nbd info URI` and `livemig nbd list URI`: what a server offers, seen through our client. */
import { NbdClient, parseNbdUri, type NbdAddress } from '../../../nbd/index.ts';
import { parse, asUsage } from '../parse.ts';
import { UsageError } from '../usage-error.ts';
import { formatBytes } from '../../util/size.ts';

export const infoHelp = `Usage: livemig nbd info URI [--json]

Connect to an NBD export and print its size, flags and block sizes.
URI: nbd://HOST[:PORT]/EXPORT or nbd+unix:///EXPORT?socket=PATH; over TLS,
nbds://[IDENTITY@]HOST[:PORT]/EXPORT?tls-psk-file=FILE (IDENTITY:HEXKEY lines)
or ?tls-certificates=DIR (ca-cert.pem, client-cert.pem, client-key.pem), and
nbds+unix:// likewise.`;

export const listHelp = `Usage: livemig nbd list URI [--json]

List the exports an NBD server offers (NBD_OPT_LIST).`;

function uriArgument(positionals: string[], help: string): NbdAddress {
  if (positionals.length !== 1) throw new UsageError(`expected one NBD URI\n${help}`);
  return asUsage(() => parseNbdUri(positionals[0]));
}

export async function runInfo(args: string[]): Promise<number> {
  const { values, positionals } = parse(args, {}, true);
  if (values.help) return void console.log(infoHelp), 0;
  const client = await NbdClient.connect(uriArgument(positionals, infoHelp));
  const info = {
    uri: client.uri,
    size: client.size,
    readOnly: client.readOnly,
    structuredReplies: client.structuredReplies,
    tls: client.tls,
    canFlush: client.canFlush,
    canFua: client.canFua,
    canTrim: client.canTrim,
    canWriteZeroes: client.canWriteZeroes,
    canMultiConn: client.canMultiConn,
    blockSize: client.blockSize,
  };
  await client.close();
  if (values.json) console.log(JSON.stringify(info));
  else {
    console.log(`${info.uri}\n  size: ${info.size} (${formatBytes(info.size)})`);
    const flags = ['readOnly', 'structuredReplies', 'canFlush', 'canFua', 'canTrim', 'canWriteZeroes', 'canMultiConn'] as const;
    for (const f of flags) console.log(`  ${f}: ${info[f]}`);
    console.log(`  tls: ${info.tls ?? 'no'}`);
    console.log(`  block sizes: minimum ${info.blockSize.minimum}, preferred ${info.blockSize.preferred}, maximum ${info.blockSize.maximum}`);
  }
  return 0;
}

export async function runList(args: string[]): Promise<number> {
  const { values, positionals } = parse(args, {}, true);
  if (values.help) return void console.log(listHelp), 0;
  const exports = await NbdClient.list(uriArgument(positionals, listHelp));
  if (values.json) console.log(JSON.stringify(exports));
  else for (const e of exports) console.log(`${JSON.stringify(e.name)}\t${e.description}`);
  return 0;
}
