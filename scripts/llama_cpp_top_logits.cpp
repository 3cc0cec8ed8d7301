// Greedy decoding with llama.cpp's library that prints, for every step, the most likely tokens
// with their logits, in the format of `cargo xtask generate --top-logits` (one line a step on
// stdout), so that where llama.cpp's text and papertune's part, the margins can be compared.
//
// Built by scripts/llama_cpp_roundtrip.py against the llama.cpp it builds:
//   c++ -O2 -std=c++17 -I llama.cpp/include -I llama.cpp/ggml/include llama_cpp_top_logits.cpp \
//       -L llama.cpp/build/bin -lllama -lggml -lggml-base -Wl,-rpath,llama.cpp/build/bin
// Usage: llama_cpp_top_logits MODEL.gguf LORA.gguf|- PROMPT STEPS CANDIDATES

#include "llama.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

// A token's text, quoted with the escapes of Rust's `{:?}` for the characters that need them.
static std::string quoted_piece(const llama_vocab * vocab, llama_token token) {
    char buf[256];
    const int n = llama_token_to_piece(vocab, token, buf, sizeof buf, 0, true);
    std::string out = "\"";
    for (int i = 0; i < std::max(n, 0); i++) {
        const unsigned char c = buf[i];
        if (c == '"' || c == '\\') {
            out += '\\';
            out += c;
        } else if (c == '\n') {
            out += "\\n";
        } else if (c == '\t') {
            out += "\\t";
        } else if (c == '\r') {
            out += "\\r";
        } else if (c < 0x20) {
            char esc[16];
            snprintf(esc, sizeof esc, "\\u{%x}", c);
            out += esc;
        } else {
            out += c;
        }
    }
    return out + "\"";
}

int main(int argc, char ** argv) {
    if (argc != 6) {
        fprintf(stderr, "usage: %s MODEL.gguf LORA.gguf|- PROMPT STEPS CANDIDATES\n", argv[0]);
        return 2;
    }
    const char * model_path = argv[1];
    const char * lora_path = argv[2];
    const std::string prompt = argv[3];
    const int steps = atoi(argv[4]);
    const int candidates = std::max(atoi(argv[5]), 1);

    llama_backend_init();
    llama_model * model = llama_model_load_from_file(model_path, llama_model_default_params());
    if (model == nullptr) {
        fprintf(stderr, "cannot load %s\n", model_path);
        return 1;
    }
    llama_context_params params = llama_context_default_params();
    params.n_ctx = 1024;
    params.n_batch = 1024;
    llama_context * ctx = llama_init_from_model(model, params);
    if (strcmp(lora_path, "-") != 0) {
        llama_adapter_lora * adapter = llama_adapter_lora_init(model, lora_path);
        if (adapter == nullptr) {
            fprintf(stderr, "cannot load the adapter %s\n", lora_path);
            return 1;
        }
        float scale = 1.0f;
        llama_set_adapters_lora(ctx, &adapter, 1, &scale);
    }
    const llama_vocab * vocab = llama_model_get_vocab(model);
    std::vector<llama_token> tokens(prompt.size() + 8);
    const int n_prompt = llama_tokenize(vocab, prompt.c_str(), prompt.size(), tokens.data(), tokens.size(), true, false);
    if (n_prompt < 0) {
        fprintf(stderr, "cannot tokenize the prompt\n");
        return 1;
    }
    tokens.resize(n_prompt);

    const int n_vocab = llama_vocab_n_tokens(vocab);
    std::vector<int> order(n_vocab);
    llama_batch batch = llama_batch_get_one(tokens.data(), n_prompt);
    llama_token next = 0;
    for (int step = 0; step < steps; step++) {
        if (llama_decode(ctx, batch) != 0) {
            fprintf(stderr, "llama_decode failed at step %d\n", step);
            return 1;
        }
        const float * logits = llama_get_logits_ith(ctx, -1);
        for (int i = 0; i < n_vocab; i++) {
            order[i] = i;
        }
        const int k = std::min(candidates, n_vocab);
        std::partial_sort(order.begin(), order.begin() + k, order.end(), [&](int a, int b) {
            return logits[a] > logits[b] || (logits[a] == logits[b] && a < b);
        });
        printf("step %d:", step);
        for (int i = 0; i < k; i++) {
            printf(" %s %.4f", quoted_piece(vocab, order[i]).c_str(), logits[order[i]]);
        }
        if (k >= 2) {
            printf(" (margin %.4f)", logits[order[0]] - logits[order[1]]);
        }
        printf("\n");
        next = order[0];
        if (llama_vocab_is_eog(vocab, next)) {
            break;
        }
        batch = llama_batch_get_one(&next, 1);
    }
    llama_free(ctx);
    llama_model_free(model);
    return 0;
}
