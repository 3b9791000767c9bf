"""The contract's flow through a client openapi-generator generated from the server's
/openapi.json: `python flow.py <client dir> <server url> <token of a user.write caller>`.

Prints one line per call, `<call> <HTTP status>`, for tests/tests/openapi_client.rs to compare
with the contract's: add, wrong code, right code, again, remove, verify after remove.
"""

import sys

sys.path.insert(0, sys.argv[1])

import otp_sms_client  # noqa: E402  (generated into the directory given)
from otp_sms_client.exceptions import ApiException  # noqa: E402

url, token = sys.argv[2], sys.argv[3]
client = otp_sms_client.ApiClient(otp_sms_client.Configuration(host=url, access_token=token))
users = otp_sms_client.ZITADELUsersApi(client)


def call(name, run):
    try:
        answer = run()
        print(f"{name} 200")
        return answer
    except ApiException as e:
        print(f"{name} {e.status}")
        return None


phone = otp_sms_client.V3alphaSetPhone(number="+41791234567", return_code={})
added = call("add", lambda: users.z_itadel_users_add_otpsms_authenticator("alice", phone))
registration, code = added.otp_sms_id, added.verification_code
wrong = "0" * len(code) if code != "0" * len(code) else "1" * len(code)
verify = users.z_itadel_users_verify_otpsms_registration
call("wrong_code", lambda: verify("alice", registration, wrong))
call("right_code", lambda: verify("alice", registration, code))
call("again", lambda: verify("alice", registration, code))
call("remove", lambda: users.z_itadel_users_remove_otpsms_authenticator("alice", registration))
call("verify_after_remove", lambda: verify("alice", registration, code))
