// Stream a chat completion from Headrace's OpenAI-compatible API with the official
// `openai` package: the same code that talks to any OpenAI-compatible server.
//
//   HEADRACE_TOKEN=$(../../.venv/bin/headrace token issue --subject me | tail -1) \
//     node openai-example.js "Write a haiku about rivers"
//
// HEADRACE_URL (default http://127.0.0.1:8080/v1), MODEL (default: the gateway's
// first model), MAX_TOKENS (default 64), OPENAI_MODE=completions for /v1/completions.
// Prints the text on stdout and "finish=<reason> completion_tokens=<n>" on stderr;
// exits 2 with the error's status and message when the request is refused.
import OpenAI from "openai";

const client = new OpenAI({
  baseURL: process.env.HEADRACE_URL ?? "http://127.0.0.1:8080/v1",
  apiKey: process.env.HEADRACE_TOKEN ?? "missing",
  maxRetries: 0,
});
const text = process.argv[2] ?? "Hello";
const maxTokens = Number(process.env.MAX_TOKENS ?? 64);

try {
  const model = process.env.MODEL ?? (await client.models.list()).data[0].id;
  const options = { model, max_tokens: maxTokens, stream: true, stream_options: { include_usage: true } };
  const stream =
    process.env.OPENAI_MODE === "completions"
      ? await client.completions.create({ ...options, prompt: text })
      : await client.chat.completions.create({ ...options, messages: [{ role: "user", content: text }] });
  let finish = "";
  let usage = null;
  for await (const chunk of stream) {
    const choice = chunk.choices[0];
    if (choice) {
      process.stdout.write(choice.delta?.content ?? choice.text ?? "");
      finish = choice.finish_reason ?? finish;
    }
    usage = chunk.usage ?? usage;
  }
  process.stdout.write("\n");
  console.error(`finish=${finish} completion_tokens=${usage?.completion_tokens}`);
} catch (error) {
  if (error instanceof OpenAI.APIError) {
    console.error(`error ${error.status}: ${error.message}`);
    process.exit(2);
  }
  throw error;
}
