"""web: the artifact's model in the browser. Entry: build_site() writes a static site (page, model, tokenizer,
onnxruntime-web and tokenizers.js vendored from npm); serve_site() serves it on loopback, cross-origin isolated."""

from toolchain.web.pages import PAGES, Page
from toolchain.web.server import serve_site
from toolchain.web.site import SiteSettings, build_site

__all__ = ["PAGES", "Page", "SiteSettings", "build_site", "serve_site"]
