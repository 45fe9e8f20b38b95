# mappings/shopify/order.yaml written in jq (run through the `jq` Python package, compiled once).
# Same payload as shipmap's: keys with no value are left out, except cancelled_at, cancel_reason and closed_at
# (default: null); ids as exact text (jq 1.7 keeps the digits of an untouched number literal); money through
# tonumber; ISO 8601 date-times with an offset normalised with regexes (jq cannot read a wall time in a named
# zone, so a date-time without an offset is an error here; Shopify always sends one).

def compact: del(.[] | nulls);  # with_entries(select(.value != null)) is the same, 6x slower in jq
def present: . != null and . != "";
def truthy: . != null and . != false and . != "" and . != [] and . != {};
def first_present(f): [f | select(present)] | first;
def num: if type == "string" then gsub(","; "") | tonumber else . end;
def money: if . == null then null else num end;
def total: [.[]? | select(. != null) | num] | add // 0;
def id: if . == null then null elif type == "number" then tostring else tostring | ltrimstr(" ") | rtrimstr(" ") end;
def datetime:
  if . == null then null
  # The form Shopify sends is already the normalised one: one regex test, no capture.
  elif test("^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}[+-][0-9]{2}:[0-9]{2}$") then .
  else
    (capture("^(?<dt>[0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9]{2}:[0-9]{2}:[0-9]{2})(?<frac>\\.[0-9]+)?(?<tz>Z|[+-][0-9]{2}:?[0-9]{2})$")
      // error("not an ISO 8601 date-time with an offset: \(.)"))
    | (.dt | sub(" "; "T"))
      + ((.frac // "")[:7] | sub("0+$"; "") | if . == "." then "" else . end)
      + (if .tz == "Z" then "+00:00" elif (.tz | length) == 5 then .tz[:3] + ":" + .tz[3:] else .tz end)
  end;
def lookup_fulfillment:
  if . == null then "NOT_FILLED"
  else {"fulfilled": "FULFILLED", "partial": "PARTIALLY_FILLED", "unfulfilled": "NOT_FILLED", "restocked": "NOT_FILLED"}[tostring] // ""
  end;
def address: if type == "object" then
    {first_name, last_name, name, company, phone, address1, address2, city, province, province_code, country,
     country_code, country_name, zip, latitude, longitude} | compact | if . == {} then null else . end
  else null end;
def pairs: if (. // [] | length) > 0 then [.[] | {name, value} | compact | select(. != {})] else null end;
# A line's units shipped: the whole line when it says fulfilled, else its units in the fulfillments that were
# not cancelled, failed or errored (the larger of the two).
def shipped($o):
  . as $l
  | [(if .fulfillment_status == "fulfilled" then .quantity // 0 else 0 end),
     ([($o.fulfillments // [])[] | select(.status | IN("cancelled", "failure", "error") | not)
       | .line_items[]? | select(.id == $l.id) | .quantity // 0] | add // 0)]
  | max;
def status:
  . as $o
  | if ($o.cancelled_at | present) then
      [$o.line_items[] | objects] as $lines
      | if any($lines[]; shipped($o) > 0) | not then "CANCELLED"
        elif any($lines[]; (.quantity // 0) > shipped($o)) then "PARTIALLY_CANCELLED"
        else "OPEN" end
    else
      [($o.refunds // [])[] | .refund_line_items[]?] as $refunded
      | if any($o.line_items[];
          . as $l
          | [$refunded[] | select(.line_item_id == $l.id)] as $mine
          | ([$mine[] | select(.restock_type == "cancel") | .quantity] | add // 0) as $by_refund
          | (if ($l.current_quantity | type) == "number"
             then [0, $l.quantity - $l.current_quantity - ([$mine[].quantity] | add // 0)] | max
             else 0 end) as $by_edit
          | $by_refund + $by_edit > 0)
        then "PARTIALLY_CANCELLED" else "OPEN" end
    end;

(if (.order | truthy) then .order else . end)
| . as $o
| .currency as $currency
| ({
    id: (.id | id // error("order.id: required field has no value")),
    number: .name,
    status: status,
    fulfillment_status: (.fulfillment_status | lookup_fulfillment),
    item_quantity: ([.line_items | arrays | .[] | objects | .quantity] | total),
    total_weight: ({value: .total_weight, units: "grms"} | compact),
    shipping_info: (
      (.shipping_lines | if type == "array" then .[0] else null end)
      | if . == null then null else
          {
            code,
            title,
            price: ({value: (.price | money), currency: $currency} | compact | if . == {} then null else . end),
            discount: ({value: ([.discount_allocations[]?.amount] | total), currency: $currency} | compact),
            source: "Shopify"
          } | compact
        end),
    created_at: (.created_at | datetime),
    updated_at: (.updated_at | datetime),
    currency: .currency,
    shipping_address: (.shipping_address | address),
    billing_address: (.billing_address | address),
    line_items: (.line_items | if . == null then null else [.[] | (
      . as $l
      | {
          sku: (.sku // ""),
          quantity,
          title,
          name,
          product_id: (.product_id | id),
          variant_id: (.variant_id | id),
          variant_title,
          vendor,
          taxable,
          gift_card,
          weight: ({value: .grams, units: "grms"} | compact),
          price: ({value: (.price | money), currency: $currency} | compact | if . == {} then null else . end),
          image_url: "",
          properties: (.properties | pairs)
        } | compact)] end),
    financial_details: ({
        subtotal_price: ({value: (.subtotal_price | money), currency: $currency} | compact | if . == {} then null else . end),
        total_tax: ({value: (.total_tax | money), currency: $currency} | compact | if . == {} then null else . end),
        total_discounts: ({value: (.total_discounts | money), currency: $currency} | compact | if . == {} then null else . end),
        total_price: ({value: (.total_price | money), currency: $currency} | compact | if . == {} then null else . end),
        taxes_included,
        financial_status,
        gateway: first_present(.gateway, (.payment_gateway_names | if . == null then null else map(select(. != null)) | join(", ") end))
      } | compact | if . == {} then null else . end),
    customer: ({
        first_name: .customer.first_name,
        last_name: .customer.last_name,
        email: (first_present(.customer.email, .email, .contact_email) // error("order.customer.email: required field has no value")),
        phone: (first_present(.customer.phone, .phone, .customer.default_address.phone, .billing_address.phone, .shipping_address.phone) // ""),
        tags: .customer.tags,
        address: (.customer.default_address | address)
      } | compact),
    checkout_token,
    properties: (.note_attributes | pairs)
  } | compact)
+ {
    cancelled_at: (.cancelled_at | datetime),
    cancel_reason: .cancel_reason,
    closed_at: (.closed_at | datetime)
  }
