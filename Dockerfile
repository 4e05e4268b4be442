# GPU worker / producer / Flower image. Models are mounted at /models, never downloaded at run time.
FROM vllm/vllm-openai:latest
WORKDIR /srv/vlmq
COPY pyproject.toml README.md ./
COPY app app
COPY workers workers
COPY producers producers
COPY config config
RUN pip install --no-cache-dir -e .
ENV REMAP_SIGTERM=SIGQUIT
ENTRYPOINT []
