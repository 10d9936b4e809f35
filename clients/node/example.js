// Stream a completion to stdout:
//   HEADRACE_TOKEN=$(../../.venv/bin/headrace token issue --subject me | tail -1) \
//     node example.js "Once upon a time"
import { FinishReason, connect } from "./index.js";

const client = connect(process.env.HEADRACE_TARGET ?? "127.0.0.1:8080", process.env.HEADRACE_TOKEN);
const prompt = process.argv.slice(2).join(" ") || "Once upon a time";

try {
  for await (const message of client.generate(
    { prompt, params: { maxTokens: Number(process.env.MAX_TOKENS ?? 32) } },
    { timeoutMs: 60_000 },
  )) {
    process.stdout.write(message.text);
    if (message.finishReason !== FinishReason.UNSPECIFIED) {
      const usage = message.usage;
      process.stderr.write(
        `\n[${message.model}] finish=${FinishReason[message.finishReason]} ` +
          `completion_tokens=${usage?.completionTokens} request_id=${message.requestId}\n`,
      );
    }
  }
} catch (error) {
  // ConnectError carries the gRPC status code and the gateway's message.
  process.stderr.write(`error: ${error.code !== undefined ? error.code + ": " : ""}${error.rawMessage ?? error.message}\n`);
  process.exit(2);
}
