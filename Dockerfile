# syntax=docker/dockerfile:1
# Node 24 LTS, the version .ci/run tests besides 20 (supported: >= 20.19.0, for undici 7 and
# @sentry/core 11; `--build-arg NODE_IMAGE=node:20.19.5-slim` still builds). Pin a digest here
# (node:24.22.3-slim@sha256:…) for reproducible production builds.
ARG NODE_IMAGE=node:24.22.3-slim

FROM ${NODE_IMAGE} AS build
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json ./
COPY src ./src
RUN npm run build

FROM ${NODE_IMAGE} AS deps
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --no-audit --no-fund && npm cache clean --force

FROM ${NODE_IMAGE} AS runtime
ENV NODE_ENV=production \
    FLEXPRICE_HTTP_ADDR=0.0.0.0:8080 \
    FLEXPRICE_DATA_DIR=/data
WORKDIR /app
COPY --from=deps /app/node_modules ./node_modules
COPY --from=build /app/dist ./dist
COPY package.json ./
COPY migrations ./migrations
RUN mkdir -p /data && chown node:node /data
USER node
VOLUME ["/data"]
EXPOSE 8080
CMD ["node", "dist/bin/flexprice.js", "serve"]
