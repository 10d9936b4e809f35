// A conversation over gRPC: a system turn, earlier turns, then the next user turn,
// streamed back as Generate streams a prompt (optionally as JSON matching a schema):
//   HEADRACE_TOKEN=$(../../.venv/bin/headrace token issue --subject me | tail -1) \
//     node chat-example.js "What is the capital of France?"
//   JSON_SCHEMA=schema.json node chat-example.js "Name a city and its population"
import { readFileSync } from "node:fs";
import { FinishReason, Role, connect } from "./index.js";

const client = connect(process.env.HEADRACE_TARGET ?? "127.0.0.1:8080", process.env.HEADRACE_TOKEN);
const question = process.argv.slice(2).join(" ") || "What is the capital of France?";
const messages = [
  { role: Role.SYSTEM, content: "You answer in one short sentence." },
  { role: Role.USER, content: "Hello" },
  { role: Role.ASSISTANT, content: "Hello! How can I help?" },
  { role: Role.USER, content: question },
];
const responseFormat = process.env.JSON_SCHEMA
  ? { format: { case: "jsonSchema", value: readFileSync(process.env.JSON_SCHEMA, "utf8") } }
  : undefined;

try {
  for await (const message of client.generate(
    { messages, responseFormat, params: { maxTokens: Number(process.env.MAX_TOKENS ?? 48) } },
    { timeoutMs: 60_000 },
  )) {
    process.stdout.write(message.text);
    if (message.finishReason !== FinishReason.UNSPECIFIED) {
      process.stderr.write(
        `\n[${message.model}] finish=${FinishReason[message.finishReason]} ` +
          `prompt_tokens=${message.usage?.promptTokens} request_id=${message.requestId}\n`,
      );
    }
  }
} catch (error) {
  process.stderr.write(`error: ${error.code !== undefined ? error.code + ": " : ""}${error.rawMessage ?? error.message}\n`);
  process.exit(2);
}
