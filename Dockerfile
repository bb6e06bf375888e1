# The service image: `vmpooler` with its roles (`vmpooler api`, `vmpooler manager`).
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY events ./events
COPY projectors ./projectors
COPY commands ./commands
COPY providers ./providers
COPY web ./web
COPY vmpooler ./vmpooler
RUN pip install --no-cache-dir . && useradd --system vmpooler
COPY examples/vmpooler.yaml /etc/vmpooler/vmpooler.yaml
USER vmpooler
ENV VMPOOLER_CONFIG_FILE=/etc/vmpooler/vmpooler.yaml
EXPOSE 4567
ENTRYPOINT ["vmpooler"]
