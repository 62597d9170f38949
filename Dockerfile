# The convoy image used by docker-compose.yml: one image for every role.
FROM python:3.11-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends openssh-client jq iproute2 bash \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY . /app
RUN python -m pip install --no-cache-dir -c /app/requirements/lock.txt -e /app
ENV CONVOY_STATE_DIR=/var/lib/convoy
CMD ["convoy", "--help"]
