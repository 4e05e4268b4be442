# GPU worker / producer / Flower image. Models are mounted at /models, never downloaded at run time.
FROM vllm/vllm-openai:latest
WORKDIR /srv/vlmq
COPY pyproject.toml README.md ./
COPY app app
COPY workers workers
COPY producers producers
COPY config config
RUN pip install --no-cache-dir -e . \
 && useradd --create-home --uid 10001 --user-group --shell /usr/sbin/nologin vlmq
# Workers read what messages name: they must not be root. Models are mounted read-only,
# caches (Hugging Face, vLLM, torch) go to the user's home.
USER vlmq
ENV HOME=/home/vlmq
ENV REMAP_SIGTERM=SIGQUIT
ENTRYPOINT []
